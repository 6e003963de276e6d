#!/usr/bin/env python
"""Prepare Kermany 2018 (retinal OCT with image-level diagnoses) for OCTSeg.

Examples::

    python scripts/prepare_kermany.py ~/Downloads/ZhangLabData.zip data/kermany

SOURCE holds train/ and test/ (OCT2017/, CellData/OCT/; a folder or a .zip). One volume per
patient, class and part. No pixel labels: every B-scan is prepared unlabelled with its image-
level class (volume meta ``class``, release folder in ``part``), read by ``dataset=kermany``
(``dataset.classes=[NORMAL]`` selects classes). Running it again skips the volumes already
there; other settings need --overwrite or another folder.
"""

from __future__ import annotations

import sys

from octseg.data.kermany import prepare_kermany
from octseg.data.prepared import prepare_main

if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_kermany))
