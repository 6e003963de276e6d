"""The cheap metric families of a :class:`~octseg.metrics.suite.MetricSuite`: overlap, boundary,
thickness and topology. All run in torch on the device of the predictions.

Aggregation conventions (also in docs/metrics.md):

* overlap: per scan and class from the scan's counts; the dataset value of a class is the
  NaN-ignoring mean over scans; ``volume/<m>`` pools (sums) the counts of each volume's scans,
  then averages the volume scores over volumes.
* boundary / thickness / topology: errors are pooled over all A-scans (columns) where the
  reference is defined, over the dataset or over each volume (``volume/`` keys: mean over
  volumes of the pooled volume values). ``max_um`` is the mean over scans of each scan's maximum.
"""

from __future__ import annotations

from typing import Any

import torch

from octseg.metrics._base import (
    BatchContext,
    MetricFamily,
    SuiteSpec,
    nanmean0,
    named,
    volume_sum,
)
from octseg.metrics.overlap import OVERLAP_METRICS, compute_overlap_scores, confusion_counts
from octseg.metrics.surfaces import (
    layer_thickness,
    surface_error_stats,
    thickness_error_stats,
    topology_violation_counts,
)

__all__ = ["OverlapFamily", "BoundaryFamily", "ThicknessFamily", "TopologyFamily"]


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def require_anatomy(spec: SuiteSpec, family: str, key: str) -> list[int]:
    """The anatomy list ``key``, or a ValueError saying which setting is missing."""
    value = spec.anatomy.get(key)
    if not value:
        raise ValueError(
            f"Metric family {family!r} needs anatomy.{key} (got {value!r}); set it in the "
            "dataset config (conf/dataset/<name>.yaml, key anatomy) or drop the family from "
            "metrics.metrics."
        )
    return [int(v) for v in value]


class OverlapFamily(MetricFamily):
    """Dice, IoU, precision, recall, specificity, accuracy, balanced accuracy per class."""

    name = "overlap"

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"counts": (self.spec.num_classes, 4)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        counts = confusion_counts(
            ctx.pred, ctx.target, self.spec.num_classes, self.spec.ignore_index
        )
        ctx.labels_checked = True  # confusion_counts validated both label ranges
        return {"counts": counts.double()}

    def _scores(self, counts: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = compute_overlap_scores(counts, self.spec.empty_value)
        total = counts[..., 0, :].sum(-1)
        scores["pixel_accuracy"] = _safe_div(counts[..., 0].sum(-1), total)
        return scores

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        counts = states["counts"]
        vol_counts, _ = volume_sum(counts, volume)
        out: dict[str, Any] = {}
        # "" = mean of per-scan scores; "volume/" = counts pooled per volume, then averaged over
        # volumes; "pooled/" = counts pooled over the whole set (one score per class, as papers
        # that report "Dice over the test set" compute it).
        pooled = counts.sum(0, keepdim=True)
        for prefix, scores in (
            ("", self._scores(counts)),
            ("volume/", self._scores(vol_counts)),
            ("pooled/", self._scores(pooled)),
        ):
            for metric in OVERLAP_METRICS:
                out.update(
                    named(
                        prefix + metric,
                        nanmean0(scores[metric]),
                        self.spec.class_names,
                        self.spec.reported_classes,
                    )
                )
            out[prefix + "pixel_accuracy"] = nanmean0(scores["pixel_accuracy"])
        return out

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scores = compute_overlap_scores(states["counts"], self.spec.empty_value)
        return {metric: scores[metric] for metric in OVERLAP_METRICS}


class BoundaryFamily(MetricFamily):
    """Per-surface boundary errors in micrometres: MAD, signed bias, RMSE and max."""

    name = "boundary"

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        ordered = require_anatomy(spec, self.name, "ordered_labels")
        names = spec.anatomy.get("surface_names") or [
            f"surface_{k}" for k in range(len(ordered) - 1)
        ]
        if len(names) != len(ordered) - 1:
            raise ValueError(
                f"anatomy.surface_names has {len(names)} names but anatomy.ordered_labels "
                f"({len(ordered)} regions) defines {len(ordered) - 1} surfaces; fix the dataset "
                "config."
            )
        self.surface_names = [str(n) for n in names]

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"stats": (len(self.surface_names), 5)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        z_pred, z_true, defined = ctx.surfaces()
        return {"stats": surface_error_stats(z_pred, z_true, defined, self.spec.axial_um)}

    @staticmethod
    def _pooled(stats: torch.Tensor) -> dict[str, torch.Tensor]:
        n = stats[..., 4]
        return {
            "mad_um": _safe_div(stats[..., 0], n),
            "bias_um": _safe_div(stats[..., 1], n),
            "rmse_um": _safe_div(stats[..., 2], n).sqrt(),
        }

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        stats = states["stats"]
        out: dict[str, Any] = {}
        for key, value in self._pooled(stats.sum(0)).items():
            out.update(named(key, value, self.surface_names))
        out.update(named("max_um", nanmean0(stats[..., 3]), self.surface_names))
        vol_stats, _ = volume_sum(stats, volume)
        for key, value in self._pooled(vol_stats).items():
            out.update(named("volume/" + key, nanmean0(value), self.surface_names))
        return out

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stats = states["stats"]
        values = self._pooled(stats)
        values["max_um"] = stats[..., 3]
        return values


class ThicknessFamily(MetricFamily):
    """Mean absolute (and signed) layer thickness error in micrometres per layer."""

    name = "thickness"

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        ordered = require_anatomy(spec, self.name, "ordered_labels")
        layers = require_anatomy(spec, self.name, "layer_labels")
        missing = [lab for lab in layers if lab not in ordered]
        if missing:
            raise ValueError(
                f"anatomy.layer_labels {missing} are not in anatomy.ordered_labels {ordered}; "
                "every layer must be one of the ordered regions."
            )
        self.positions = [ordered.index(lab) for lab in layers]
        self.layer_names = [spec.class_names[lab] for lab in layers]

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"stats": (len(self.positions), 3)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        z_pred, z_true, defined = ctx.surfaces()
        height = ctx.target.shape[-2]
        t_pred = layer_thickness(z_pred, height, self.positions, self.spec.axial_um)
        t_true = layer_thickness(z_true, height, self.positions, self.spec.axial_um)
        return {"stats": thickness_error_stats(t_pred, t_true, defined)}

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        stats = states["stats"]
        total = stats.sum(0)
        out: dict[str, Any] = {}
        out.update(
            named("thickness_mae_um", _safe_div(total[:, 0], total[:, 2]), self.layer_names)
        )
        out.update(
            named("thickness_bias_um", _safe_div(total[:, 1], total[:, 2]), self.layer_names)
        )
        vol, _ = volume_sum(stats, volume)
        out.update(
            named(
                "volume/thickness_mae_um",
                nanmean0(_safe_div(vol[..., 0], vol[..., 2])),
                self.layer_names,
            )
        )
        return out

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stats = states["stats"]
        return {
            "mean_abs_err_um": _safe_div(stats[..., 0], stats[..., 2]),
            "bias_um": _safe_div(stats[..., 1], stats[..., 2]),
        }


class TopologyFamily(MetricFamily):
    """Fraction of (reference-defined) columns whose predicted regions are out of order."""

    name = "topology"

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        self.ordered = require_anatomy(spec, self.name, "ordered_labels")

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"counts": (2,)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        rank_pred, _, defined = ctx.ranks()
        return {"counts": topology_violation_counts(rank_pred, defined)}

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        counts = states["counts"]
        total = counts.sum(0)
        vol, _ = volume_sum(counts, volume)
        return {
            "topology_violation_rate": _safe_div(total[0], total[1]),
            "volume/topology_violation_rate": nanmean0(_safe_div(vol[:, 0], vol[:, 1])),
        }

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        counts = states["counts"]
        return {"topology_violation_rate": _safe_div(counts[:, 0], counts[:, 1])}
