#!/usr/bin/env python
"""Prepare AROI (Melinscak et al. 2021) from the release for OCTSeg.

Examples::

    python scripts/prepare_aroi.py "AROI - online" data/aroi
    python scripts/prepare_aroi.py AROI.zip data/aroi_1to4 --patients 1 2 3 4

SOURCE is a folder or .zip at any level above patient1..patient24. The output folder is what
``dataset=aroi`` reads as ``${paths.data_dir}/aroi``: one prepared volume per patient with the
annotated B-scans (``raw/labeled``) and their ``mask/number`` labels 0..7. Running it again skips
the patients already written; other settings need ``--overwrite`` or another folder.
"""

from __future__ import annotations

import argparse
import sys

from octseg.data.aroi import PATIENTS, prepare_aroi
from octseg.data.prepared import prepare_main


def add_options(parser: argparse.ArgumentParser) -> None:
    """AROI options: which patients to prepare."""
    parser.add_argument(
        "--patients", type=int, nargs="+", default=list(PATIENTS), help="default: 1..24"
    )


if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_aroi, add_options))
