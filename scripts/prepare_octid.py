#!/usr/bin/env python
"""Prepare OCTID (retinal OCT image database, image-level classes) for OCTSeg.

Examples::

    python scripts/prepare_octid.py ~/Downloads/OCTID data/octid

SOURCE holds the class folders NORMAL/, MH/, AMD/, CSR/, DR/ (a folder or a .zip). Each image is
its own volume, all in the test part. No pixel labels: every B-scan is prepared unlabelled with
its image-level class (volume meta ``class``, release folder in ``part``), read by
``dataset=octid`` (``dataset.classes=[NORMAL]`` selects classes). Running it again skips the
volumes already there; other settings need --overwrite or another folder.
"""

from __future__ import annotations

import sys

from octseg.data.octid import prepare_octid
from octseg.data.prepared import prepare_main

if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_octid))
