"""Image-level detection: how well a per-B-scan score ranks the B-scans that contain a class
above those that do not (ROC-AUC over B-scans, per class).

A B-scan is positive for class ``c`` when at least ``min_pixels`` annotated reference pixels
have label ``c`` (B-scans without an annotated pixel are left out). Its score for ``c`` is, in
order of preference:

1. the score the method gives the whole B-scan (``MetricSuite.update(scan_scores=...)``, e.g.
   f-AnoGAN's anomaly score; NaN where a method gives none for that class);
2. the largest probability of ``c`` over the B-scan's annotated pixels;
3. the fraction of annotated pixels predicted as ``c`` (label maps only).

``detection_auroc/<class>`` is the Mann-Whitney estimate ``P(s_pos > s_neg) + 0.5 P(tie)`` over
all (positive, negative) pairs of B-scans (NaN without both), ``detection_auroc`` its mean over
the reported classes. Per-scan rows (``dist_reduce_fx="cat"``), so DDP and per-volume subsets
are exact.
"""

from __future__ import annotations

from typing import Any

import torch

from octseg.metrics._base import (
    BatchContext,
    MetricFamily,
    SuiteSpec,
    annotated,
    named,
    register_family,
)

__all__ = ["DetectionFamily", "rank_auroc"]


def rank_auroc(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """ROC-AUC of ``scores [N]`` for bool labels ``positive [N]`` with ties counted half
    (NaN when either class is empty)."""
    pos, neg = scores[positive], scores[~positive]
    if pos.numel() == 0 or neg.numel() == 0:
        return scores.new_tensor(float("nan"))
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().to(scores.dtype)


@register_family("detection")
class DetectionFamily(MetricFamily):
    """B-scan-level ROC-AUC per class from per-scan scores (see the module docstring).

    Options: ``min_pixels`` (1).
    """

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        opts = dict(spec.options.get(self.name, {}))
        self.min_pixels = int(opts.pop("min_pixels", 1))
        if opts or self.min_pixels < 1:
            raise ValueError(
                f"detection options must be {{min_pixels: int >= 1}}, got "
                f"{spec.options.get(self.name)!r}."
            )

    def row_states(self) -> dict[str, tuple[int, ...]]:
        k = self.spec.num_classes
        return {"score": (k,), "present": (k,)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        k = self.spec.num_classes
        valid = annotated(ctx)
        if valid is None:
            valid = torch.ones_like(ctx.target, dtype=torch.bool)
        target = torch.where(valid, ctx.target, torch.full_like(ctx.target, k))
        counts = torch.stack([(target == c).sum(dim=(1, 2)) for c in range(k)], 1).double()
        any_valid = valid.flatten(1).any(1)
        present = (counts >= self.min_pixels).double()
        present[~any_valid] = float("nan")
        if ctx.scan_scores is not None:
            score = ctx.scan_scores.double()
        elif ctx.probs is not None:
            probs = ctx.probs.double().masked_fill(~valid[:, None], float("-inf"))
            score = probs.flatten(2).amax(2)
        else:
            hits = torch.stack([((ctx.pred == c) & valid).sum(dim=(1, 2)) for c in range(k)], 1)
            score = hits.double() / valid.flatten(1).sum(1, keepdim=True).clamp_min(1)
        if score.shape != (ctx.batch_size, k):
            raise ValueError(
                f"scan_scores must be [B, {k}] (one score per B-scan and class), got "
                f"{tuple(score.shape)}."
            )
        return {"score": score, "present": present}

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        score, present = states["score"], states["present"]
        values = []
        for c in range(self.spec.num_classes):
            keep = score[:, c].isfinite() & present[:, c].isfinite()
            values.append(rank_auroc(score[keep, c], present[keep, c] > 0))
        auc = torch.stack(values) if values else score.new_zeros(0)
        return named("detection_auroc", auc, self.spec.class_names, self.spec.reported_classes)
