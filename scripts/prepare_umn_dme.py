#!/usr/bin/env python
"""Prepare UMN DME (Rashno et al., IEEE TBME 2018) fluid masks for OCTSeg.

Examples::

    python scripts/prepare_umn_dme.py ~/Downloads/UMNDataset.mat data/umn_dme
    python scripts/prepare_umn_dme.py release_folder/ data/umn_dme_g2 --grader 2

Writes the prepared layout (src/octseg/data/prepared.py) that ``dataset=umn_dme`` reads from
``${paths.data_dir}/umn_dme``: 30 subjects x 25 B-scans (subject 30, without masks, is
prepared unlabelled), 8-bit, labels 0 background / 1 fluid of the chosen grader. Running it
again skips the volumes already there; another grader needs ``--overwrite`` or another folder.
"""

from __future__ import annotations

import argparse
import sys

from octseg.data.prepared import prepare_main
from octseg.data.umn import prepare_umn_dme


def add_options(parser: argparse.ArgumentParser) -> None:
    """The UMN options."""
    parser.add_argument("--grader", type=int, choices=(1, 2), default=1, help="default: 1")


if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_umn_dme, add_options))
