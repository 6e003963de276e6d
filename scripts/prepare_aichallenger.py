#!/usr/bin/env python
"""Prepare AI-Challenger 2018 retinal edema segmentation from the official release for OCTSeg.

Examples::

    python scripts/prepare_aichallenger.py ~/Downloads/ai_challenger_2018 data/aichallenger
    python scripts/prepare_aichallenger.py ai_challenger_fl2018_trainingset.zip \\
        data/aichallenger --sets train

SOURCE holds Edema_trainingset/, Edema_validationset/ and Edema_testset/ (any of them, at any
depth; a folder or a .zip). Writes OCTSeg's prepared layout: one folder per Cirrus cube under
volumes/, 128 B-scans 1024 x 512 with labels 0 background, 1 REA, 2 SRF, 3 PED (the test set
unlabelled), read by ``dataset=aichallenger``. Running it again with the same settings skips
the volumes already there; other settings need --overwrite or another folder.
"""

from __future__ import annotations

import argparse
import sys

from octseg.data.aichallenger import prepare_aichallenger
from octseg.data.prepared import prepare_main


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--sets``: the release sets to prepare."""
    parser.add_argument(
        "--sets", nargs="+", choices=("train", "val", "test"), default=["train", "val", "test"],
        help="sets to prepare (default: all three)",
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_aichallenger, add_options))
