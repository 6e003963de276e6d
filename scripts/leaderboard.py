#!/usr/bin/env python
"""One table from the reports of many runs: mean ± SD over seeds/folds, bootstrap confidence
intervals over test subjects and Wilcoxon tests against the best method
(:mod:`octseg.evaluation.leaderboard` documents every statistic).

Usage::

    python scripts/leaderboard.py logs/train/multiruns/<sweep> [more run folders ...]
        [--out DIR] [--metrics dice 'dice/*' mad_um ...] [--dataset duke]
        [--level 0.95] [--resamples 10000] [--seed 0] [--no-plots] [--wandb-project NAME]

Writes leaderboard.md, leaderboard.csv, leaderboard.json and boxplot_<family>.png to --out
(default ./leaderboard) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import logging
import sys

from octseg.evaluation.leaderboard import (
    DEFAULT_METRICS,
    build_leaderboard,
    load_runs,
    log_to_wandb,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="run or multirun folders (searched below)")
    parser.add_argument(
        "--out", default="leaderboard", help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        help="report keys or fnmatch patterns; the first ranks (default: %(default)s)",
    )
    parser.add_argument("--dataset", default=None, help="keep only runs of this dataset")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--no-plots", action="store_true", help="skip the box plots")
    parser.add_argument(
        "--wandb-project",
        default=None,
        help="also log the table to this W&B project (off by default; WANDB_MODE applies)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        runs = load_runs(args.folders, dataset=args.dataset)
        board = build_leaderboard(runs, args.metrics, args.level, args.resamples, args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"leaderboard.py: {err}", file=sys.stderr)
        return 2
    paths = board.write(args.out, plots=not args.no_plots)
    print(board.to_markdown())
    print(f"{len(runs)} runs, {len(board.methods)} methods -> {paths['markdown'].parent}")
    if args.wandb_project:
        log_to_wandb(board, args.wandb_project)
    return 0


if __name__ == "__main__":
    sys.exit(main())
