"""Helpers of the release-parser tests: tiny files in the official formats, written in code, and
a fast development run of a prepared dataset through ``octseg.training.train``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from octseg.training import train
from tests.conftest import compose_config

_MET = {np.dtype(np.uint8): "MET_UCHAR", np.dtype(np.uint16): "MET_USHORT"}


def write_mhd(mhd: Path, volume: np.ndarray, spacing_xyz_mm: Sequence[float]) -> Path:
    """Writes ``volume`` (numpy z, y, x) as a MetaImage header plus ``.raw``, as RETOUCH does."""
    z, y, x = volume.shape
    mhd.parent.mkdir(parents=True, exist_ok=True)
    mhd.write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "CompressedData = False\nTransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\n"
        "CenterOfRotation = 0 0 0\nAnatomicalOrientation = RAI\n"
        f"ElementSpacing = {' '.join(str(s) for s in spacing_xyz_mm)}\n"
        f"DimSize = {x} {y} {z}\nElementType = {_MET[volume.dtype]}\n"
        f"ElementDataFile = {mhd.stem}.raw\n"
    )
    mhd.with_suffix(".raw").write_bytes(
        np.ascontiguousarray(volume).astype("<" + volume.dtype.str[1:]).tobytes()
    )
    return mhd


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Writes an array as PNG (``mode`` e.g. ``"P"`` for a palette image of grey levels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    img.save(path)
    return path


def write_split(path: Path, unit: str, train: list[str], val: list[str], test: list[str]) -> str:
    """A one-fold split file for a tiny fixture; returns its path."""
    spec = {"unit": unit, "protocol": "tiny",
            "folds": [{"fold": 0, "train": train, "val": val, "test": test}]}  # fmt: skip
    path.write_text(json.dumps(spec))
    return str(path)


def dev_run(out: Path, dataset: str, data_root: Path, split: str, *extra: str) -> dict:
    """``train(cfg)`` with ``debug=fdr`` on a prepared fixture (CPU, one batch of each part)."""
    cfg = compose_config(
        out,
        [f"dataset={dataset}", f"paths.data_dir={data_root}", "debug=fdr", "model=unet_small",
         "logger=csv", "augmentation=light", f"dataset.split={split}",
         "~callbacks.rich_progress_bar", "~callbacks.model_summary", *extra],
        fast=False,
    )  # fmt: skip
    try:
        return train(cfg)
    finally:
        GlobalHydra.instance().clear()
