#!/usr/bin/env python
"""Prepare GOALS (MICCAI 2022) from the challenge release for OCTSeg.

Examples::

    python scripts/prepare_goals.py ~/Downloads/GOALS2022-Train.zip data/goals
    python scripts/prepare_goals.py GOALS2022/ data/goals_all --sets Train Validation Test

SOURCE is a folder or .zip at any level above Train/. The output folder is what
``dataset=goals`` reads as ``${paths.data_dir}/goals``: one prepared volume per image
(``train_0001`` ...), masks remapped 255 -> 0 background, 0 -> 1 RNFL, 80 -> 2 GCIPL,
160 -> 3 choroid, and the glaucoma label of Train_GC_GT.xlsx in each volume's meta. Running it
again skips the volumes already written; other settings need ``--overwrite`` or another folder.
"""

from __future__ import annotations

import argparse
import sys

from octseg.data.goals import SETS, prepare_goals
from octseg.data.prepared import prepare_main


def add_options(parser: argparse.ArgumentParser) -> None:
    """GOALS options: which sets to prepare."""
    parser.add_argument(
        "--sets", nargs="+", choices=list(SETS), default=["Train"], help="default: Train"
    )


if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_goals, add_options))
