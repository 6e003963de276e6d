"""One plot of several active-learning curves, e.g. the three acquisitions of a multirun:

python scripts/plot_learning_curves.py RUNS/*/active_learning/learning_curve_*.csv --out a.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from octseg.active_learning.curve import plot_curves, read_curve
from octseg.utils.io import atomic_write_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="+", type=Path, help="learning_curve_<acquisition>.csv files")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args()
    curves = {}
    for path in args.csv:
        rows = read_curve(path)
        name = rows[0].get("acquisition") or path.stem
        curves[name if name not in curves else f"{name} ({path.parent.parent.name})"] = rows
    atomic_write_bytes(args.out, plot_curves(curves, title=args.title))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
