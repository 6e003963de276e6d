"""Fluid quantities per fluid class (``anatomy.fluid_labels``), RETOUCH-style, in physical units
from each B-scan's own spacing:

* area per B-scan ``A = n_pixels * axial_um * lateral_um * 1e-6`` (mm^2) over annotated pixels;
  ``fluid_area_abs_err_mm2`` = mean over B-scans of ``|A_pred - A_true|``;
* volume per volume ``V = sum_scans A * d * 1e-3`` (mm^3) with ``d`` the scan's distance to the
  next B-scan in micrometres (the batch's ``spacing_um[:, 2]``, else the suite's
  ``bscan_spacing_um``); ``volume/fluid_volume_abs_err_mm3`` = mean over volumes of
  ``|V_pred - V_true|`` (a volume with an unknown ``d`` gives NaN and is left out);
* detection per B-scan: present when at least ``detection_min_pixels`` pixels (default 1);
  sensitivity, specificity and accuracy over B-scans.
"""

from __future__ import annotations

from typing import Any

import torch

from octseg.metrics._base import (
    BatchContext,
    MetricFamily,
    SuiteSpec,
    annotated,
    label_pixel_counts,
    named,
    nanmean0,
    register_family,
    require_anatomy,
    safe_div,
    volume_sum,
)

__all__ = ["FluidFamily"]


@register_family("fluid")
class FluidFamily(MetricFamily):
    """Fluid area (mm^2), volume (mm^3) errors and per-B-scan detection per fluid class."""

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        opts = dict(spec.options.get(self.name, {}))
        self.min_pixels = int(opts.pop("detection_min_pixels", 1))
        if opts:
            raise ValueError(
                f"Unknown fluid options {sorted(opts)}; expected detection_min_pixels."
            )
        self.labels = require_anatomy(spec, self.name, "fluid_labels")
        self.names = [spec.class_names[v] for v in self.labels]

    def row_states(self) -> dict[str, tuple[int, ...]]:
        # pixels: (pred, true) per fluid class; scale: (pixel area mm^2, B-scan distance mm) of
        # each scan, kept per scan so that scans of different spacing pool correctly
        return {"pixels": (len(self.labels), 2), "scale": (2,)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        groups = [[v] for v in self.labels]
        valid = annotated(ctx)
        pred = label_pixel_counts(ctx.pred, groups, valid)
        true = label_pixel_counts(ctx.target, groups, valid)
        spacing = ctx.spacing_um
        scale = torch.stack([spacing[:, 0] * spacing[:, 1] * 1e-6, spacing[:, 2] * 1e-3], dim=1)
        return {"pixels": torch.stack([pred, true], dim=-1), "scale": scale}

    @staticmethod
    def _areas(states: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fluid areas in mm^2 ``[N, F, 2]`` (pred, true)."""
        return states["pixels"] * states["scale"][:, 0].view(-1, 1, 1)

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        pixels = states["pixels"]
        area = self._areas(states)  # [N, F, 2]
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
        slabs, _ = volume_sum(area * states["scale"][:, 1].view(-1, 1, 1), volume)  # mm^3
        vol_err = (slabs[..., 0] - slabs[..., 1]).abs()
        out.update(named("volume/fluid_volume_abs_err_mm3", nanmean0(vol_err), self.names))
        pred_present = pixels[..., 0] >= self.min_pixels
        true_present = pixels[..., 1] > 0
        tp = (pred_present & true_present).sum(0).double()
        tn = (~pred_present & ~true_present).sum(0).double()
        n_pos, n = true_present.sum(0).double(), pixels.new_tensor(float(pixels.shape[0]))
        out.update(named("fluid_detection_sensitivity", safe_div(tp, n_pos), self.names))
        out.update(named("fluid_detection_specificity", safe_div(tn, n - n_pos), self.names))
        out.update(
            named("fluid_detection_accuracy", safe_div(tp + tn, n.expand_as(tp)), self.names)
        )
        return out

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        area = self._areas(states)
        return {"area_pred_mm2": area[..., 0], "area_true_mm2": area[..., 1]}
