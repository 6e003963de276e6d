#!/usr/bin/env python
"""Prepare OIMHS (Ye et al. 2023) from the figshare release for OCTSeg.

Examples::

    python scripts/prepare_oimhs.py ~/Downloads/OIMHS.zip data/oimhs
    python scripts/prepare_oimhs.py OIMHS/ data/oimhs --overwrite

SOURCE is the archive as downloaded or its extracted folder (holding Images/ and "Demographics
of the participants.csv"). The output folder is what ``dataset=oimhs`` reads as
``${paths.data_dir}/oimhs``: one prepared volume per eye, each composite split into the grey
B-scan (left 512 columns) and labels from the exact colours of the right half (0 background,
1 retina, 2 choroid, 3 cyst, 4 macular hole), the eye's patient as its subject. Running it again
skips the eyes already written.
"""

from __future__ import annotations

import sys

from octseg.data.oimhs import prepare_oimhs
from octseg.data.prepared import prepare_main

if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_oimhs))
