#!/usr/bin/env python
"""Writes the Duke DME subject-wise split files published in ``splits/duke/``.

Protocols (subjects are ``Subject_01`` .. ``Subject_10``; a subject is never split):

- ``ynet``: train 1-6, val 7-8, test 9-10 (Y-Net official code, Farshad et al. 2022).
- ``relaynet``: train 1-8, test 9-10, no validation subjects. ReLayNet (Roy et al. 2017) trains
  on 8 subjects and tests on 2 without naming them; OCTSeg tests on 9-10 so that results are
  comparable with ``ynet``, and keeps no validation subject so that all 8 train.
- ``kfold``: 5 folds; fold i tests subjects 2i+1, 2i+2, validates on the next pair
  (2i+3, 2i+4, wrapping round to 1-2), and trains on the remaining 6.
- ``ynet_kfold``: 4 folds inside ynet's development subjects 1-8; fold i validates on subjects
  2i+1, 2i+2 and trains on the other 6; every fold tests 9-10, which no fold trains or
  validates on, so the ensemble of the fold models is tested on unseen subjects (and compares
  with ``ynet`` and ``relaynet``, which test 9-10 too).

Usage::

    python scripts/make_splits.py            # writes splits/duke/<protocol>.json
    python scripts/make_splits.py --check    # exits 1 if the files differ from what it would write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from octseg.data.splits import rotating_folds
from octseg.utils.config import repo_root

SUBJECTS = [f"Subject_{i:02d}" for i in range(1, 11)]
CITATION = "Chiu et al., Biomed. Opt. Express 6(4):1172-1194, 2015"


def subjects(*numbers: int) -> list[str]:
    """Subject ids for 1-based subject numbers."""
    return [SUBJECTS[n - 1] for n in numbers]


def build_splits() -> dict[str, dict]:
    """The split specifications, keyed by protocol name."""
    kfold = rotating_folds({s: i // 2 for i, s in enumerate(SUBJECTS)}, 5)
    common = {"dataset": "duke_dme", "source": CITATION, "unit": "subject"}
    return {
        "ynet": {
            **common,
            "protocol": "ynet",
            "description": "Y-Net official split (Farshad et al. 2022): train 1-6, val 7-8, "
            "test 9-10.",
            "folds": [
                {
                    "fold": 0,
                    "train": subjects(*range(1, 7)),
                    "val": subjects(7, 8),
                    "test": subjects(9, 10),
                }  # fmt: skip
            ],
        },
        "relaynet": {
            **common,
            "protocol": "relaynet",
            "description": "ReLayNet-style (Roy et al. 2017) 8 train / 2 test; the paper does not "
            "name the test subjects, OCTSeg uses 9-10 (as ynet) and no validation subject: "
            "select the last checkpoint.",
            "folds": [
                {"fold": 0, "train": subjects(*range(1, 9)), "val": [], "test": subjects(9, 10)}
            ],
        },
        "kfold": {
            **common,
            "protocol": "kfold",
            "description": "5-fold by subject: fold i tests subjects 2i+1..2i+2, validates on the "
            "next pair (wrapping), trains on the other 6.",
            "folds": kfold,
        },
        "ynet_kfold": {
            **common,
            "protocol": "ynet_kfold",
            "description": "4-fold cross-validation inside the ynet development subjects 1-8: "
            "fold i validates on subjects 2i+1..2i+2 and trains on the other 6; every fold tests "
            "9-10 (held out from all folds), for the ensemble of the fold models.",
            "folds": [
                {
                    "fold": f,
                    "train": [s for s in SUBJECTS[:8] if s not in subjects(2 * f + 1, 2 * f + 2)],
                    "val": subjects(2 * f + 1, 2 * f + 2),
                    "test": subjects(9, 10),
                }
                for f in range(4)
            ],
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Writes (or checks) the split files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_dir = repo_root() / "splits" / "duke"
    parser.add_argument("--out-dir", type=Path, default=default_dir)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    differ = []
    for name, spec in build_splits().items():
        path = args.out_dir / f"{name}.json"
        text = json.dumps(spec, indent=2) + "\n"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                differ.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if differ:
        print(f"out of date: {differ}; run python scripts/make_splits.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
