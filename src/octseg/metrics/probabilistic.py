"""Metrics on class probabilities: ROC-AUC and average precision per class (one-vs-rest, pooled
over all annotated pixels of the evaluation set) and the Brier score.

AUC and AP come from a histogram of the scores of positives and negatives per class with
``num_bins`` equal-width bins, a summed (``dist_reduce_fx="sum"``) state of fixed size, so they
need no pixel storage and synchronise under DDP. On the binned scores they equal scikit-learn's
``roc_auc_score`` (trapezoidal ROC with ties) and ``average_precision_score`` (step-wise
``sum (R_n - R_{n-1}) P_n``) exactly; versus the raw scores the difference is bounded by the bin
width (1e-3 for the default 1000 bins). A hand-written histogram rather than torchmetrics'
binned ``MulticlassAUROC``: it adds the ``ignore_index`` mask and the AP from the same state,
costs one bincount per batch, and fits the suite's single-state design.

Brier score (multi-class): ``mean over pixels of sum_k (p_k - y_k)^2``; ``brier/<class>`` is the
one-vs-rest mean squared error ``mean (p_c - y_c)^2`` and ``prob_rmse/<class>`` its square root.
MSE on class-index maps is meaningless (it depends on label order) and is not offered.
"""

from __future__ import annotations

from typing import Any

import torch

from octseg.metrics._base import BatchContext, MetricFamily, SuiteSpec, named, register_family

#: Scores are binned as ``floor(p * num_bins * _SHRINK)`` so that ``p = 1`` lands in the last bin
#: without a clamp pass; the bin edges move by less than 1e-6 of a bin.
_SHRINK = 1.0 - 1e-6

__all__ = [
    "probability_histogram",
    "score_bins",
    "auroc_from_histogram",
    "ap_from_histogram",
    "ProbabilisticFamily",
]


def probability_histogram(
    probs: torch.Tensor, target: torch.Tensor, num_bins: int, ignore_index: int | None
) -> torch.Tensor:
    """Counts of negatives/positives per class and score bin.

    Args:
        probs: class probabilities ``[B, K, H, W]`` in ``[0, 1]``.
        target: labels ``[B, H, W]``.
        num_bins: number of equal-width score bins (see :func:`score_bins`).
        ignore_index: label of pixels left out, or None.

    Returns:
        float64 ``[K, num_bins, 2]`` (negatives, positives).
    """
    k = probs.shape[1]
    size = k * num_bins
    # Flat (class, bin) index in two passes over the K*H*W scores: a fused multiply-add of
    # the class offsets, then an int32 cast; int32 halves the memory traffic of bincount.
    idx = _flat_bins(probs, num_bins)
    total = torch.bincount(idx.reshape(-1), minlength=size)
    # Positives: the flat index of each pixel's true class (B*H*W values).
    valid = None if ignore_index is None else target != ignore_index
    t = target if valid is None else torch.where(valid, target, 0)
    pos_idx = idx.gather(1, t.unsqueeze(1))
    if valid is not None:
        pos_idx = pos_idx.masked_fill(~valid.unsqueeze(1), size)  # spare bin
    positives = torch.bincount(pos_idx.reshape(-1), minlength=size + 1)[:size]
    if valid is not None and not bool(valid.all()):
        # ignored pixels (usually few) are subtracted rather than masked in every channel
        ignored = idx.permute(0, 2, 3, 1)[~valid]  # [n, K]
        total = total - torch.bincount(ignored.reshape(-1), minlength=size)
    hist = torch.stack([total - positives, positives], dim=-1)
    return hist.view(k, num_bins, 2).double()


def _flat_bins(probs: torch.Tensor, num_bins: int) -> torch.Tensor:
    """int32 ``class * num_bins + bin`` for scores ``[B, K, H, W]``."""
    k = probs.shape[1]
    offsets = torch.arange(k, device=probs.device, dtype=probs.dtype) * num_bins
    return torch.add(offsets.view(1, k, 1, 1), probs, alpha=num_bins * _SHRINK).to(torch.int32)


def score_bins(probs: torch.Tensor, num_bins: int) -> torch.Tensor:
    """The bin of each score ``[B, K, H, W]`` as :func:`probability_histogram` counts it."""
    k = probs.shape[1]
    offsets = (torch.arange(k, device=probs.device) * num_bins).view(1, k, 1, 1)
    return _flat_bins(probs, num_bins).long() - offsets


def _cumulative(hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cumulative (FP, TP) counts with thresholds from the highest bin down: ``[K, bins]``."""
    desc = hist.flip(1)
    return desc[..., 0].cumsum(1), desc[..., 1].cumsum(1)


def auroc_from_histogram(hist: torch.Tensor) -> torch.Tensor:
    """One-vs-rest ROC-AUC per class ``[K]`` (NaN when a class has no positives or negatives)."""
    fp, tp = _cumulative(hist)
    neg, pos = fp[:, -1:], tp[:, -1:]
    fpr = torch.cat([torch.zeros_like(neg), fp], 1) / neg
    tpr = torch.cat([torch.zeros_like(pos), tp], 1) / pos
    auc = ((fpr[:, 1:] - fpr[:, :-1]) * (tpr[:, 1:] + tpr[:, :-1]) / 2).sum(1)
    defined = (neg[:, 0] > 0) & (pos[:, 0] > 0)
    return torch.where(defined, auc, torch.full_like(auc, float("nan")))


def ap_from_histogram(hist: torch.Tensor) -> torch.Tensor:
    """Average precision per class ``[K]`` (NaN when a class has no positives)."""
    fp, tp = _cumulative(hist)
    pos = tp[:, -1:]
    recall = tp / pos
    precision = tp / (tp + fp)
    d_recall = torch.diff(torch.cat([torch.zeros_like(pos), recall], 1), dim=1)
    terms = torch.where(d_recall > 0, d_recall * precision, torch.zeros_like(d_recall))
    ap = terms.sum(1)
    return torch.where(pos[:, 0] > 0, ap, torch.full_like(ap, float("nan")))


@register_family("probabilistic")
class ProbabilisticFamily(MetricFamily):
    """ROC-AUC, AP and Brier score per class from probabilities.

    Options: ``num_bins`` (1000). Batches without probabilities (label-map predictions) are
    skipped for this family, and it reports NaN when it never saw any.
    """

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        opts = dict(spec.options.get(self.name, {}))
        self.num_bins = int(opts.pop("num_bins", 1000))
        if opts or self.num_bins < 2:
            raise ValueError(
                f"probabilistic options must be {{num_bins: int >= 2}}, got "
                f"{spec.options.get(self.name)!r}."
            )
        self.names = spec.class_names

    def sum_states(self) -> dict[str, tuple[int, ...]]:
        k = self.spec.num_classes
        return {"hist": (k, self.num_bins, 2), "sq_err": (k,), "pixels": (1,)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        k = self.spec.num_classes
        if ctx.probs is None:
            dev = ctx.target.device
            return {
                "hist": torch.zeros(k, self.num_bins, 2, dtype=torch.float64, device=dev),
                "sq_err": torch.zeros(k, dtype=torch.float64, device=dev),
                "pixels": torch.zeros(1, dtype=torch.float64, device=dev),
            }
        probs, target = ctx.probs.float(), ctx.target
        if (
            probs.shape[1] != k
            or probs.shape[0] != target.shape[0]
            or probs.shape[2:] != target.shape[1:]
        ):
            raise ValueError(
                f"probs must be [B, {k}, H, W] matching target {tuple(target.shape)}, got "
                f"{tuple(probs.shape)}."
            )
        valid = None if self.spec.ignore_index is None else target != self.spec.ignore_index
        # sum_pixels (p_c - y_c)^2 = sum p_c^2 - 2 sum_{y=c} p_c + #{y=c}: no one-hot tensor;
        # the squares of all pixels in one norm pass, ignored pixels subtracted afterwards.
        sq = torch.linalg.vector_norm(probs, dim=(0, 2, 3)).double() ** 2
        if valid is not None and not bool(valid.all()):
            sq = sq - (probs.permute(0, 2, 3, 1)[~valid].double() ** 2).sum(0)
        t = target if valid is None else torch.where(valid, target, k)
        p_true = probs.gather(1, t.clamp(max=k - 1).unsqueeze(1)).reshape(-1).double()
        p_true_sum = torch.bincount(t.reshape(-1), weights=p_true, minlength=k + 1)[:k]
        n_true = torch.bincount(t.reshape(-1), minlength=k + 1)[:k].double()
        return {
            "hist": probability_histogram(probs, target, self.num_bins, self.spec.ignore_index),
            "sq_err": sq - 2 * p_true_sum + n_true,
            "pixels": n_true.sum().view(1),
        }

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        reported = self.spec.reported_classes
        out: dict[str, Any] = {}
        out.update(named("auroc", auroc_from_histogram(states["hist"]), self.names, reported))
        out.update(named("ap", ap_from_histogram(states["hist"]), self.names, reported))
        pixels = states["pixels"][0]
        per_class = states["sq_err"] / pixels if pixels > 0 else states["sq_err"] * float("nan")
        out.update({f"brier/{n}": per_class[i] for i, n in enumerate(self.names)})
        out.update({f"prob_rmse/{n}": per_class[i].sqrt() for i, n in enumerate(self.names)})
        out["brier"] = per_class.sum()
        return out
