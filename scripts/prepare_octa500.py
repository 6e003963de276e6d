#!/usr/bin/env python
"""Prepare OCTA-500 (Li et al., MedIA 2024) OCT B-scans and their six surfaces for OCTSeg.

Examples::

    python scripts/prepare_octa500.py ~/Downloads/OCTA-500 data/octa500
    python scripts/prepare_octa500.py OCTA-500/ data/octa500 --subset 6mm --bscan-step 8

Writes the prepared layout (src/octseg/data/prepared.py) that ``dataset=octa500`` reads from
``${paths.data_dir}/octa500``: one volume per eye id (10001..10500), 8-bit B-scans, labels 0..6
from the GT_Layers surfaces (vitreous, ILM-IPL, IPL-OPL, OPL-ISOS, ISOS-RPE, RPE-BM, choroid),
the surface rows, and the spacing of each volume. Running it again skips the volumes already
there; other settings need ``--overwrite`` or another folder.
"""

from __future__ import annotations

import argparse
import sys

from octseg.data.octa500 import prepare_octa500
from octseg.data.prepared import prepare_main


def add_options(parser: argparse.ArgumentParser) -> None:
    """The OCTA-500 options."""
    parser.add_argument(
        "--subset", choices=("6mm", "3mm", "both"), default="both", help="default: both"
    )
    parser.add_argument(
        "--bscan-step", type=int, default=1, help="keep every n-th B-scan (default 1: all)"
    )


if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_octa500, add_options))
