"""The learning-curve files: CSV columns, the plot, reading back, several curves in one plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from octseg.active_learning.curve import CURVE_FIELDS, plot_curves, read_curve, write_curve
from tests.conftest import REPO_ROOT

ROWS = [
    {"round": 0, "acquisition": "edgeal", "labelled_percent": 1.5, "dice": 0.2, "mad_um": 40.0},
    {"round": 1, "acquisition": "edgeal", "labelled_percent": 12.1, "dice": 0.6, "mad_um": 9.5},
]


def test_curve_csv_and_plot(tmp_path: Path) -> None:
    path = write_curve(ROWS, tmp_path, "edgeal")
    assert path == tmp_path / "learning_curve_edgeal.csv"
    assert path.read_text().splitlines()[0] == ",".join(CURVE_FIELDS)
    back = read_curve(path)
    assert [float(r["dice"]) for r in back] == [0.2, 0.6]
    png = (tmp_path / "learning_curve_edgeal.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert plot_curves({"a": ROWS, "b": ROWS[:1]}).startswith(b"\x89PNG")
    bad = tmp_path / "other.csv"
    bad.write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="labelled_percent"):
        read_curve(bad)


def test_plot_script_overlays_curves(tmp_path: Path) -> None:
    a = write_curve(ROWS, tmp_path / "a", "edgeal")
    b = write_curve([{**r, "acquisition": "random"} for r in ROWS], tmp_path / "b", "random")
    out = tmp_path / "both.png"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "plot_learning_curves.py"), str(a), str(b),
         "--out", str(out)], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
