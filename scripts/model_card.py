#!/usr/bin/env python
"""Writes MODEL_CARD.md beside a checkpoint (:mod:`octseg.evaluation.model_card`): method,
data, split, spacing assumptions, test metrics with confidence intervals, intended use, and
"not for clinical use". ``train.py`` already writes one beside ``best.ckpt`` after its test.

Usage::

    python scripts/model_card.py ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt
        [report=<eval run>/metrics.json] [out=path/MODEL_CARD.md]
"""

from __future__ import annotations

import sys

from octseg.evaluation.model_card import write_model_card

KEYS = ("ckpt_path", "report", "out")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            print(
                f"model_card.py: unknown argument {arg!r}; expected "
                f"{', '.join(k + '=...' for k in KEYS)}.",
                file=sys.stderr,
            )
            return 2
        settings[key] = value
    if not settings.get("ckpt_path"):
        print("model_card.py: give ckpt_path=<run>/checkpoints/best.ckpt.", file=sys.stderr)
        return 2
    try:
        path = write_model_card(settings["ckpt_path"], settings.get("report"), settings.get("out"))
    except (FileNotFoundError, ValueError) as err:
        print(f"model_card.py: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
