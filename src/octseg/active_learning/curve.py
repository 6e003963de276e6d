"""The active-learning learning curve: test Dice and boundary MAD against the share of pool
pixels labelled, one CSV and one plot per acquisition function (written atomically)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from octseg.utils.io import atomic_write_bytes, atomic_write_csv

__all__ = ["CURVE_FIELDS", "plot_curves", "read_curve", "write_curve"]

#: Columns of ``learning_curve_<acquisition>.csv``: the round, its last epoch, the labels it
#: trained on, its test Dice and MAD (um), and the seconds spent evaluating and acquiring.
CURVE_FIELDS = (
    "round",
    "epoch",
    "acquisition",
    "labelled_pixels",
    "labelled_scans",
    "labelled_percent",
    "dice",
    "mad_um",
    "eval_s",
    "mc_s",
    "maps_s",
    "superpixels_s",
    "select_s",
)


def plot_curves(curves: dict[str, Sequence[dict[str, Any]]], title: str = "") -> bytes:
    """A PNG (bytes) of Dice and MAD against % of pixels labelled, one line per curve name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, rows in curves.items():
        x = [float(r["labelled_percent"]) for r in rows]
        for ax, key in zip(axes, ("dice", "mad_um"), strict=True):
            ax.plot(x, [float(r[key]) for r in rows], marker="o", label=name)
    for ax, label in zip(axes, ("test Dice", "test boundary MAD (um)"), strict=True):
        ax.set_xlabel("pixels labelled (% of pool)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_curve(rows: Sequence[dict[str, Any]], out_dir: str | Path, acquisition: str) -> Path:
    """Writes ``learning_curve_<acquisition>.csv`` and ``.png`` into ``out_dir``; returns the
    CSV path."""
    out = Path(out_dir)
    path = atomic_write_csv(out / f"learning_curve_{acquisition}.csv", rows, CURVE_FIELDS)
    atomic_write_bytes(
        out / f"learning_curve_{acquisition}.png",
        plot_curves({acquisition: rows}, title=f"active learning: {acquisition}"),
    )
    return path


def read_curve(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``learning_curve_<acquisition>.csv``.

    Raises:
        ValueError: if the file lacks the ``labelled_percent``, ``dice`` or ``mad_um`` column.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"labelled_percent", "dice", "mad_um"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(
            f"{path}: no column {sorted(missing)}; expected a learning_curve_<acquisition>.csv "
            "written by the active-learning callback."
        )
    return rows
