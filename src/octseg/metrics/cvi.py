"""Choroidal vascularity index (Agrawal et al. 2016): ``CVI = luminal area / total choroidal
area`` per B-scan, with ``anatomy.lumen_labels`` the luminal (vessel) labels and the total
choroidal area the union of ``anatomy.choroid_labels`` (stroma) and the lumen labels. A ratio of
areas of one scan, so it needs no spacing.

``cvi_abs_err`` = mean over B-scans (whose reference choroid is non-empty) of
``|CVI_pred - CVI_true|``; ``volume/cvi_abs_err`` pools the areas per volume first.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from octseg.metrics._base import (
    BatchContext,
    MetricFamily,
    SuiteSpec,
    annotated,
    label_pixel_counts,
    nanmean0,
    register_family,
    safe_div,
    volume_sum,
)

__all__ = ["CVIFamily"]

log = logging.getLogger(__name__)


@register_family("cvi")
class CVIFamily(MetricFamily):
    """Choroidal vascularity index error; inactive (no keys) when the dataset labels no lumen."""

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
        valid = annotated(ctx)
        pred = label_pixel_counts(ctx.pred, self.groups, valid)
        true = label_pixel_counts(ctx.target, self.groups, valid)
        return {"areas": torch.stack([pred, true], dim=1)}

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        if not self.active:
            return {}
        areas = states["areas"]
        cvi = safe_div(areas[..., 0], areas[..., 1])  # [N, 2] (pred, true)
        err = torch.where(torch.isnan(cvi[:, 1]), cvi[:, 1], (cvi[:, 0] - cvi[:, 1]).abs())
        err = torch.where(torch.isnan(err) & ~torch.isnan(cvi[:, 1]), torch.ones_like(err), err)
        vol, _ = volume_sum(areas, volume)
        vol_cvi = safe_div(vol[..., 0], vol[..., 1])
        return {
            "cvi_abs_err": nanmean0(err.view(-1, 1))[0],
            "cvi_pred": nanmean0(cvi[:, :1])[0],
            "cvi_true": nanmean0(cvi[:, 1:])[0],
            "volume/cvi_abs_err": nanmean0((vol_cvi[:, 0] - vol_cvi[:, 1]).abs().view(-1, 1))[0],
        }

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.active:
            return {}
        cvi = safe_div(states["areas"][..., 0], states["areas"][..., 1])
        return {"cvi_pred": cvi[:, 0], "cvi_true": cvi[:, 1]}
