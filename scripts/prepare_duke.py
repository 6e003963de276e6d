#!/usr/bin/env python
"""Prepare Duke DME (Chiu et al. 2015) from the official release for OCTSeg.

Examples::

    python scripts/prepare_duke.py ~/Downloads/2015_BOE_Chiu.zip data/duke_dme
    python scripts/prepare_duke.py 2015_BOE_Chiu/ data/duke_dme_g2_full --grader 2 --mode full

The output folder is what ``dataset=duke`` reads as ``${paths.data_dir}/duke_dme``. Running it
again with the same settings does nothing; other settings need ``--overwrite`` or another folder.
"""

from __future__ import annotations

import argparse
import logging
import sys

from octseg.data.duke_prepare import SUBJECTS, prepare_duke


def main(argv: list[str] | None = None) -> int:
    """Parses arguments, runs :func:`octseg.data.duke_prepare.prepare_duke`, prints a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="release folder or 2015_BOE_Chiu.zip with Subject_XX.mat")
    parser.add_argument("out_dir", help="output folder, e.g. <paths.data_dir>/duke_dme")
    parser.add_argument("--grader", type=int, choices=(1, 2), default=1, help="default: 1")
    parser.add_argument(
        "--mode",
        choices=("crop", "full"),
        default="crop",
        help="crop: each subject's traced columns (Y-Net style, default); "
        "full: all 768 columns, untraced ones set to --ignore-index",
    )
    parser.add_argument("--ignore-index", type=int, default=255, help="default: 255")
    parser.add_argument(
        "--subjects", type=int, nargs="+", default=list(SUBJECTS), help="default: 1..10"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a different layout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        summary = prepare_duke(
            args.source,
            args.out_dir,
            grader=args.grader,
            mode=args.mode,
            ignore_index=args.ignore_index,
            subjects=args.subjects,
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary.as_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
