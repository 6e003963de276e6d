#!/usr/bin/env python
"""Prepare RETOUCH (MICCAI 2017) training volumes from the official release for OCTSeg.

Examples::

    python scripts/prepare_retouch.py ~/Downloads/RETOUCH data/retouch
    python scripts/prepare_retouch.py RETOUCH-TrainingSet-Cirrus.zip data/retouch_cirrus \
        --vendors Cirrus

SOURCE is a folder or .zip at any level above the TRAINnnn folders. The output folder is what
``dataset=retouch`` reads as ``${paths.data_dir}/retouch``: one prepared volume per TRAINnnn
(B-scans in their native uint8/uint16, labels 0 background, 1 IRF, 2 SRF, 3 PED, spacing from
the .mhd header). Running it again skips the volumes already written; other settings need
``--overwrite`` or another folder.
"""

from __future__ import annotations

import argparse
import sys

from octseg.data.prepared import prepare_main
from octseg.data.retouch import VENDORS, prepare_retouch


def add_options(parser: argparse.ArgumentParser) -> None:
    """RETOUCH options: which vendors to prepare."""
    parser.add_argument(
        "--vendors", nargs="+", choices=list(VENDORS), default=list(VENDORS),
        help="default: all three",
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_retouch, add_options))
