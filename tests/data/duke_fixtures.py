"""Tiny Duke DME release fixtures: ``Subject_XX.mat`` files with the official field names and
layout (``images`` H x W x N uint8, ``manualLayers1/2`` 8 x W x N with NaN where untraced,
``manualFluid1/2`` H x W x N), written with ``scipy.io.savemat`` (MATLAB v5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

__all__ = ["H", "W", "N", "TRACED", "COLS", "BASE_ROWS", "FLUID_BOX", "write_release"]

H, W, N = 64, 40, 5
TRACED = (1, 3)  # B-scans traced by the graders (of N)
COLS = {1: (5, 35), 3: (8, 31)}  # traced column range [start, stop) per traced B-scan
BASE_ROWS = np.array([10, 14, 18, 22, 26, 32, 36, 40], dtype=float)  # grader 1, before wiggle
FLUID_BOX = (3, slice(28, 31), slice(15, 20))  # (B-scan, rows, cols) of grader fluid
NAN_AT = (1, 3, 20)  # (B-scan, boundary, column): an untraced boundary inside a traced column
CROSS_AT = (1, 6, 22)  # (B-scan, boundary, column): boundary 6 moved above boundary 5


def subject_arrays(subject: int) -> dict[str, np.ndarray]:
    """Arrays of one fixture subject; grader 2 traces every boundary one row lower."""
    rng = np.random.default_rng(subject)
    images = rng.integers(0, 256, size=(H, W, N), dtype=np.uint8)
    layers1 = np.full((8, W, N), np.nan)
    for b in TRACED:
        start, stop = COLS[b]
        wiggle = (np.arange(start, stop) % 3).astype(float)  # 0, 1, 2 rows across columns
        layers1[:, start:stop, b] = BASE_ROWS[:, None] + wiggle[None, :] + 0.4
    b, k, c = NAN_AT
    layers1[k, c, b] = np.nan
    b, k, c = CROSS_AT
    layers1[k, c, b] = layers1[k - 1, c, b] - 3
    layers2 = layers1 + 1.0
    fluid1 = np.zeros((H, W, N))
    fluid1[:, :, [i for i in range(N) if i not in TRACED]] = np.nan
    b, rows, cols = FLUID_BOX
    fluid1[rows, cols, b] = 2.0  # fluid instance id 2
    fluid2 = fluid1.copy()
    return {
        "images": images,
        "manualLayers1": layers1,
        "manualLayers2": layers2,
        "manualFluid1": fluid1,
        "manualFluid2": fluid2,
        "automaticLayersDME": np.zeros((8, W, N)),
    }


def write_release(folder: Path, subjects: range | list[int] | None = None, **edits) -> Path:
    """Writes ``Subject_XX.mat`` fixtures into ``folder``; ``edits`` maps a subject number to a
    callable that changes its dict of arrays before saving (for bad-input tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in subjects if subjects is not None else range(1, 11):
        arrays = subject_arrays(s)
        if f"s{s}" in edits:
            arrays = edits[f"s{s}"](arrays)
        scipy.io.savemat(folder / f"Subject_{s:02d}.mat", arrays, format="5")
    return folder
