"""What ``predict.py`` does: segment new scans with one checkpoint or a fold ensemble and write
label maps, overlays, surfaces, thickness maps and ETDRS sector means.

Output folder (``output_dir``)::

    summary.csv                      one row per B-scan: size, spacing, mean layer thickness
    etdrs.csv                        per volume with B-scan spacing: layer, sector, mean (um)
    <input>/labels/<scan>.png        label map, palette PNG (pixel values = class labels)
    <input>/overlays/<scan>.png      labels blended over the B-scan (save_overlays)
    <input>/surfaces/<scan>.csv      depth of each surface per A-scan in um from the image top
    <input>/probabilities/<scan>.npz class probabilities float16 [K, H, W] (save_probabilities)
    <input>/thickness/<layer>.npy|.png   en-face thickness maps [N, W] in um (volumes)

Everything is at the input's original size and written atomically. Surfaces and thickness come
from :func:`octseg.metrics.surfaces.extract_surfaces` and
:func:`octseg.metrics.thickness.layer_thickness` (:func:`octseg.evaluation.enface.scan_profiles`,
one extraction per B-scan), the same code that measures boundary and
thickness errors in evaluation.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from octseg.data.base import PadCollate, dataset_from_records
from octseg.evaluation.enface import (
    etdrs_sector_means,
    find_fovea,
    render_thickness_map,
    scan_profiles,
    superior_at_last_bscan,
)
from octseg.evaluation.ensemble import as_path_list, build_predictor, load_trained_modules
from octseg.evaluation.predict_inputs import (
    InputScans,
    TrainingFacts,
    find_inputs,
    input_warnings,
    read_input,
    to_channels,
    to_records,
)
from octseg.evaluation.predictions import predict_items
from octseg.postprocess import build_postprocess
from octseg.utils.callbacks import label_overlay, label_palette
from octseg.utils.io import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_npy,
    atomic_write_png,
)

__all__ = ["Anatomy", "predict_command", "resolve_spacing"]

log = logging.getLogger(__name__)


class Anatomy:
    """The label semantics a checkpoint was trained with (its dataset config).

    Args:
        dataset_cfg: the run config's ``dataset`` node.
    """

    def __init__(self, dataset_cfg: Mapping[str, Any]) -> None:
        anatomy = dataset_cfg.get("anatomy") or {}
        self.num_classes = int(dataset_cfg["num_classes"])
        names = list(dataset_cfg.get("class_names") or [])
        self.class_names = names or [f"class_{k}" for k in range(self.num_classes)]
        self.ordered = [int(v) for v in anatomy.get("ordered_labels") or []]
        self.surface_names = [str(v) for v in anatomy.get("surface_names") or []] or [
            f"surface_{k}" for k in range(max(len(self.ordered) - 1, 0))
        ]
        self.layers = [int(v) for v in anatomy.get("layer_labels") or []]
        self.fluid = [int(v) for v in anatomy.get("fluid_labels") or []]
        self.layer_names = [self.class_names[v] for v in self.layers]

    @property
    def has_layers(self) -> bool:
        return len(self.ordered) >= 2 and bool(self.layers)


def resolve_spacing(
    scans: InputScans, setting: Sequence[float] | None, training: TrainingFacts
) -> tuple[tuple[float, float, float] | None, bool]:
    """The spacing used for an input: the file's own values, then ``spacing_um`` (axial,
    lateral[, between B-scans]) for those it lacks, then the training data's axial and lateral
    spacing (assumed, logged).

    Returns:
        ``((axial, lateral, bscan) or None, known)``: ``known`` is False when the axial and
        lateral values are the training data's assumption (no spacing warning is possible).

    Raises:
        ValueError: for a malformed ``spacing_um`` setting.
    """
    given = [math.nan] * 3
    if setting is not None:
        values = [float(v) for v in setting]
        if len(values) not in (2, 3) or not all(v > 0 for v in values):
            raise ValueError(
                f"spacing_um={list(setting)}; expected [axial_um, lateral_um] or [axial_um, "
                "lateral_um, bscan_um] (positive micrometres)."
            )
        given[: len(values)] = values
    own = list(scans.spacing_um) if scans.spacing_um is not None else [math.nan] * 3
    merged = [o if math.isfinite(o) else g for o, g in zip(own, given, strict=True)]
    known = all(math.isfinite(v) for v in merged[:2])
    if not known:
        if training.spacing_um is None:
            return None, False
        log.info(
            "%s: no pixel spacing in the file or spacing_um; assuming the training data's "
            "(%s: axial %.2f, lateral %.2f um).",
            scans.path,
            training.dataset,
            *training.spacing_um,
        )
        merged[:2] = [m if math.isfinite(m) else t for m, t in zip(merged[:2],
                                                                   training.spacing_um,
                                                                   strict=True)]  # fmt: skip
    return (merged[0], merged[1], merged[2]), known


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "layer"


def _npz_bytes(probs: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, probs=probs.astype(np.float16))
    return buf.getvalue()


class _VolumeWriter:
    """Writes one input's per-scan outputs and gathers its thickness rows."""

    def __init__(
        self,
        scans: InputScans,
        out: Path,
        anatomy: Anatomy,
        spacing: tuple[float, float, float] | None,
        cfg: DictConfig,
    ) -> None:
        self.scans, self.out, self.anatomy = scans, out, anatomy
        self.spacing, self.cfg = spacing, cfg
        self.thickness_rows: list[np.ndarray] = []  # per scan [L + 1, W] (layers, total)
        self.summary: list[dict[str, Any]] = []

    def add(self, index: int, case_id: str, pred: np.ndarray, probs: np.ndarray | None) -> None:
        out, anatomy, spacing = self.out, self.anatomy, self.spacing
        atomic_write_png(out / "labels" / f"{case_id}.png", pred.astype(np.uint8), label_palette())
        if self.cfg.get("save_overlays", True):
            grey = to_channels(self.scans.bscans[index], 1, str(self.scans.path))
            # Fast PNG compression: overlays are for viewing, and speckle compresses poorly.
            overlay = label_overlay(grey, pred)
            atomic_write_png(out / "overlays" / f"{case_id}.png", overlay, compress_level=1)
        if probs is not None and self.cfg.get("save_probabilities"):
            atomic_write_bytes(out / "probabilities" / f"{case_id}.npz", _npz_bytes(probs))
        height, width = pred.shape
        row: dict[str, Any] = {
            "input": str(self.scans.path),
            "scan": case_id,
            "bscan_index": index if self.scans.is_volume else "",
            "height": height,
            "width": width,
            "axial_um": spacing[0] if spacing else "",
            "lateral_um": spacing[1] if spacing else "",
        }
        counts = np.bincount(pred.ravel(), minlength=anatomy.num_classes) / pred.size
        for k, name in enumerate(anatomy.class_names):
            row[f"fraction/{name}"] = round(float(counts[k]), 6)
        if anatomy.has_layers and spacing is not None:
            depth, thickness = scan_profiles(pred, anatomy.ordered, anatomy.layers, spacing[0])
            names = anatomy.surface_names
            table = [
                {"column": j, "x_um": round(j * spacing[1], 3),
                 **{f"{n}_um": round(float(depth[s, j]), 3) for s, n in enumerate(names)}}
                for j in range(width)
            ]  # fmt: skip
            atomic_write_csv(
                out / "surfaces" / f"{case_id}.csv",
                table,
                ["column", "x_um", *(f"{n}_um" for n in names)],
            )
            self.thickness_rows.append(thickness)
            for name, values in zip([*anatomy.layer_names, "total_retina"], thickness,
                                    strict=True):  # fmt: skip
                finite = values[np.isfinite(values)]
                row[f"thickness_um/{name}"] = round(float(finite.mean()), 3) if finite.size else ""
        self.summary.append(row)

    def finish(self, fovea_setting: Sequence[float] | None, laterality: str | None) -> list[dict]:
        """Writes the en-face maps of a volume and returns its ETDRS rows."""
        if not (self.scans.is_volume and self.thickness_rows):
            return []
        maps = np.stack(self.thickness_rows, axis=1)  # [L + 1, N, W]
        names = [*self.anatomy.layer_names, "total_retina"]
        lateral = self.spacing[1] if self.spacing else None
        bscan = self.spacing[2] if self.spacing and math.isfinite(self.spacing[2]) else None
        fovea = None
        if bscan is None or lateral is None:
            log.info(
                "%s: no B-scan spacing (file or spacing_um=[axial,lateral,bscan]); thickness "
                "maps written without ETDRS sectors.",
                self.scans.path,
            )
        elif fovea_setting is not None:
            fovea = (float(fovea_setting[0]), float(fovea_setting[1]))
        else:
            try:
                fovea = find_fovea(maps[-1], lateral, bscan)
            except ValueError as err:  # the maps are still worth writing
                log.warning("%s: no ETDRS sectors. %s", self.scans.path, err)
        for name, tmap in zip(names, maps, strict=True):
            stem = self.out / "thickness" / _safe(name)
            atomic_write_npy(stem.with_suffix(".npy"), tmap.astype(np.float32))
            png = render_thickness_map(tmap, f"{self.scans.name}: {name}", lateral, bscan, fovea)
            atomic_write_bytes(stem.with_suffix(".png"), png)
        if fovea is None:
            return []
        superior_last = superior_at_last_bscan(self.scans.meta.get("bscan_positions_mm", []))
        if superior_last is None:
            superior_last = True
            log.warning(
                "%s: B-scan order unknown; ETDRS superior/inferior assume the last B-scan is "
                "superior (as in Heidelberg volumes).",
                self.scans.path,
            )
        eye = laterality or self.scans.laterality
        if eye is None:
            eye = "OD"
            log.warning(
                "%s: laterality unknown; ETDRS nasal/temporal assume a right eye (OD). Set "
                "laterality=OS for a left eye.",
                self.scans.path,
            )
        rows = []
        for name, tmap in zip(names, maps, strict=True):
            sectors = etdrs_sector_means(tmap, fovea, lateral, bscan, eye, superior_last)
            for sector, (mean, count) in sectors.items():
                rows.append({
                    "input": str(self.scans.path), "layer": name, "sector": sector,
                    "mean_um": round(mean, 3) if math.isfinite(mean) else "",
                    "n_ascans": count, "fovea_bscan": fovea[0], "fovea_column": fovea[1],
                    "laterality": eye,
                })  # fmt: skip
        return rows


def predict_command(cfg: DictConfig) -> Path:
    """``predict.py``: predicts every input under ``cfg.input`` and writes the outputs listed in
    the module docstring into ``cfg.output_dir``.

    Returns:
        The summary CSV.

    Raises:
        FileNotFoundError, ValueError, ImportError: for missing or unreadable checkpoints and
            inputs, ensembles of incompatible checkpoints, bad settings (each naming the file
            or setting).
    """
    if cfg.get("input") is None:
        raise ValueError("predict.py needs input=<B-scan, volume file or folder>.")
    if cfg.get("laterality") not in (None, "OD", "OS"):
        raise ValueError(f"laterality={cfg.laterality}; expected OD, OS or null (from the file).")
    if cfg.get("fovea") is not None and len(cfg.fovea) != 2:
        raise ValueError(
            f"fovea={list(cfg.fovea)}; expected [bscan_index, column] or null (found from the "
            "thickness map)."
        )
    device = cfg.get("device") or "cpu"
    members = load_trained_modules(as_path_list(cfg.get("ckpt_path")), [], device=device)
    run_cfg = members[0].run_cfg
    predictor = build_predictor(members, tta=cfg.get("tta"))
    dataset_cfg = OmegaConf.to_container(run_cfg.dataset, resolve=True)
    anatomy = Anatomy(dataset_cfg)
    post = build_postprocess(cfg.get("postprocess"), dataset_cfg.get("anatomy") or {})
    training = TrainingFacts.from_config(dataset_cfg)
    dm = run_cfg.dataset.datamodule
    in_channels = int(run_cfg.dataset.get("in_channels", 1))
    ignore_index = int(run_cfg.dataset.get("ignore_index", 255))
    inputs = find_inputs(cfg.input)
    out_root = Path(cfg.output_dir)
    names: dict[str, Path] = {}
    summary: list[dict[str, Any]] = []
    etdrs: list[dict[str, Any]] = []
    keep_probs = bool(cfg.get("save_probabilities"))
    # One bar over B-scans (its total grows as inputs are read); off when not on a terminal.
    bar = tqdm(total=0, desc="predict", unit="B-scan", disable=None)
    for path in inputs:
        scans = read_input(path, cfg.get("vendor_intensity") or "log")
        if scans.name in names:
            raise ValueError(
                f"Inputs {names[scans.name]} and {path} share the output name {scans.name!r}; "
                "rename one of them."
            )
        names[scans.name] = path
        spacing, known = resolve_spacing(scans, cfg.get("spacing_um"), training)
        for message in input_warnings(scans, training, spacing if known else None):
            log.warning(message)
        records = to_records(scans, in_channels, spacing)
        bar.total += len(records)
        bar.set_description_str(scans.name)
        dataset = dataset_from_records(records, None, float(dm.get("mean", 0.0)),
                                       float(dm.get("std", 1.0)))  # fmt: skip
        loader = DataLoader(dataset, batch_size=int(cfg.get("batch_size") or 1),
                            collate_fn=PadCollate(ignore_index))  # fmt: skip
        writer = _VolumeWriter(scans, out_root / scans.name, anatomy, spacing, cfg)
        index = {r.case_id: i for i, r in enumerate(records)}
        for item in predict_items(predictor, loader, cfg.get("precision")):
            pred = torch.as_tensor(item["pred"]).long()
            if post is not None:
                pred = post(pred)
            probs = item.get("probs") if keep_probs else None
            writer.add(
                index[item["case_id"]],
                str(item["case_id"]),
                pred.cpu().numpy(),
                None if probs is None else probs.float().cpu().numpy(),
            )
            bar.update(1)
        summary.extend(writer.summary)
        etdrs.extend(writer.finish(cfg.get("fovea"), cfg.get("laterality")))
    bar.close()
    fields = list(dict.fromkeys(k for row in summary for k in row))
    summary_path = atomic_write_csv(out_root / "summary.csv", summary, fields)
    if etdrs:
        atomic_write_csv(out_root / "etdrs.csv", etdrs, list(etdrs[0]))
    log.info("Predictions of %d input(s) written to %s", len(inputs), out_root)
    return summary_path
