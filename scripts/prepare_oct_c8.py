#!/usr/bin/env python
"""Prepare OCT-C8 (retinal OCT, 8 image-level classes) for OCTSeg.

Examples::

    python scripts/prepare_oct_c8.py ~/Downloads/archive.zip data/oct_c8

SOURCE holds train/, val/ and test/ with one folder per class (a folder or the Kaggle .zip).
Each image is its own volume. No pixel labels: every B-scan is prepared unlabelled with its
image-level class (volume meta ``class``, release folder in ``part``), read by
``dataset=oct_c8`` (``dataset.classes=[NORMAL]`` selects classes). Running it again skips the
volumes already there; other settings need --overwrite or another folder.
"""

from __future__ import annotations

import sys

from octseg.data.oct_c8 import prepare_oct_c8
from octseg.data.prepared import prepare_main

if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_oct_c8))
