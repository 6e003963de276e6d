"""Clinical quantities: fluid area/volume and detection, and the choroidal vascularity index.

Fluid (RETOUCH-style), per fluid class (``anatomy.fluid_labels``):

* area per B-scan ``A = n_pixels * axial_um * lateral_um * 1e-6`` (mm^2) over annotated pixels;
  ``fluid_area_abs_err_mm2`` = mean over B-scans of ``|A_pred - A_true|``;
* volume per volume ``V = sum_scans A * bscan_spacing_um * 1e-3`` (mm^3, needs
  ``bscan_spacing_um``); ``volume/fluid_volume_abs_err_mm3`` = mean over volumes of
  ``|V_pred - V_true|`` (NaN without B-scan spacing);
* detection per B-scan: present when at least ``detection_min_pixels`` pixels (default 1);
  sensitivity, specificity and accuracy over B-scans.

Choroidal vascularity index (Agrawal et al. 2016): ``CVI = luminal area / total choroidal area``
per B-scan, with ``anatomy.lumen_labels`` the luminal (vessel) labels and the total choroidal
area the union of ``anatomy.choroid_labels`` (stroma) and the lumen labels.
``cvi_abs_err`` = mean over B-scans (whose reference choroid is non-empty) of
``|CVI_pred - CVI_true|``; ``volume/cvi_abs_err`` pools the areas per volume first.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from octseg.metrics._base import BatchContext, MetricFamily, SuiteSpec, nanmean0, named, volume_sum

__all__ = ["FluidFamily", "CVIFamily", "label_pixel_counts"]

log = logging.getLogger(__name__)


def label_pixel_counts(
    labels: torch.Tensor, groups: list[list[int]], valid: torch.Tensor | None
) -> torch.Tensor:
    """Pixels per image falling in each group of labels: float64 ``[B, len(groups)]``."""
    cols = []
    for group in groups:
        inside = torch.isin(labels, torch.as_tensor(group, device=labels.device))
        if valid is not None:
            inside &= valid
        cols.append(inside.sum(dim=(1, 2)))
    return torch.stack(cols, dim=1).double()


def _div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def _valid(ctx: BatchContext) -> torch.Tensor | None:
    ign = ctx.spec.ignore_index
    return None if ign is None else ctx.target != ign


class FluidFamily(MetricFamily):
    """Fluid area (mm^2), volume (mm^3) errors and per-B-scan detection per fluid class."""

    name = "fluid"

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        opts = dict(spec.options.get(self.name, {}))
        self.min_pixels = int(opts.pop("detection_min_pixels", 1))
        if opts:
            raise ValueError(
                f"Unknown fluid options {sorted(opts)}; expected detection_min_pixels."
            )
        labels = spec.anatomy.get("fluid_labels") or []
        if not labels:
            raise ValueError(
                "Metric family 'fluid' needs anatomy.fluid_labels (got none); set it in the "
                "dataset config or drop 'fluid' from metrics.metrics."
            )
        self.labels = [int(v) for v in labels]
        self.names = [spec.class_names[v] for v in self.labels]
        self.pixel_mm2 = spec.axial_um * spec.lateral_um * 1e-6

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"pixels": (len(self.labels), 2)}  # (pred, true)

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        groups = [[v] for v in self.labels]
        valid = _valid(ctx)
        pred = label_pixel_counts(ctx.pred, groups, valid)
        true = label_pixel_counts(ctx.target, groups, valid)
        return {"pixels": torch.stack([pred, true], dim=-1)}

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        pixels = states["pixels"]
        area = pixels * self.pixel_mm2  # [N, F, 2]
        out: dict[str, Any] = {}
        err = area[..., 0] - area[..., 1]
        out.update(named("fluid_area_abs_err_mm2", nanmean0(err.abs()), self.names))
        out.update(named("fluid_area_bias_mm2", nanmean0(err), self.names))
        vol_area, _ = volume_sum(area, volume)
        out.update(
            named(
                "volume/fluid_area_abs_err_mm2",
                nanmean0((vol_area[..., 0] - vol_area[..., 1]).abs()),
                self.names,
            )
        )
        spacing_mm = self.spec.bscan_spacing_um
        vol_err = (vol_area[..., 0] - vol_area[..., 1]).abs() * (
            spacing_mm * 1e-3 if spacing_mm else float("nan")
        )
        out.update(named("volume/fluid_volume_abs_err_mm3", nanmean0(vol_err), self.names))
        pred_present = pixels[..., 0] >= self.min_pixels
        true_present = pixels[..., 1] > 0
        tp = (pred_present & true_present).sum(0).double()
        tn = (~pred_present & ~true_present).sum(0).double()
        n_pos, n = true_present.sum(0).double(), pixels.new_tensor(float(pixels.shape[0]))
        out.update(named("fluid_detection_sensitivity", _div(tp, n_pos), self.names))
        out.update(named("fluid_detection_specificity", _div(tn, n - n_pos), self.names))
        out.update(named("fluid_detection_accuracy", _div(tp + tn, n.expand_as(tp)), self.names))
        return out

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        area = states["pixels"] * self.pixel_mm2
        return {"area_pred_mm2": area[..., 0], "area_true_mm2": area[..., 1]}


class CVIFamily(MetricFamily):
    """Choroidal vascularity index error; inactive (no keys) when the dataset labels no lumen."""

    name = "cvi"

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        lumen = [int(v) for v in spec.anatomy.get("lumen_labels") or []]
        stroma = [int(v) for v in spec.anatomy.get("choroid_labels") or []]
        self.active = bool(lumen)
        if not self.active:
            log.info("CVI metrics skipped: the dataset sets no <anatomy.lumen_labels>.")
        self.groups = [lumen, sorted(set(stroma) | set(lumen))]

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"areas": (2, 2)} if self.active else {}  # (pred, true) x (lumen, choroid)

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        if not self.active:
            return {}
        valid = _valid(ctx)
        pred = label_pixel_counts(ctx.pred, self.groups, valid)
        true = label_pixel_counts(ctx.target, self.groups, valid)
        return {"areas": torch.stack([pred, true], dim=1)}

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        if not self.active:
            return {}
        areas = states["areas"]
        cvi = _div(areas[..., 0], areas[..., 1])  # [N, 2] (pred, true)
        err = torch.where(torch.isnan(cvi[:, 1]), cvi[:, 1], (cvi[:, 0] - cvi[:, 1]).abs())
        err = torch.where(torch.isnan(err) & ~torch.isnan(cvi[:, 1]), torch.ones_like(err), err)
        vol, _ = volume_sum(areas, volume)
        vol_cvi = _div(vol[..., 0], vol[..., 1])
        return {
            "cvi_abs_err": nanmean0(err.view(-1, 1))[0],
            "cvi_pred": nanmean0(cvi[:, :1])[0],
            "cvi_true": nanmean0(cvi[:, 1:])[0],
            "volume/cvi_abs_err": nanmean0((vol_cvi[:, 0] - vol_cvi[:, 1]).abs().view(-1, 1))[0],
        }

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.active:
            return {}
        cvi = _div(states["areas"][..., 0], states["areas"][..., 1])
        return {"cvi_pred": cvi[:, 0], "cvi_true": cvi[:, 1]}
