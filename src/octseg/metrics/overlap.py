"""Overlap metrics from one batched confusion count.

Per image and class the four counts TP, FP, FN, TN come out of a single ``torch.bincount`` over
``(b * K + t) * K + p`` on the device of the predictions, with ``ignore_index`` pixels excluded.
Dice, IoU, precision, recall, specificity, accuracy and balanced accuracy are ratios of those
counts, so per-image, per-volume (summed counts) and pooled values all come from one pass.

A ratio whose denominator is zero (for Dice/IoU: the class is absent from both ground truth and
prediction) is undefined; it is returned as ``empty_value`` (NaN by default) and NaN entries are
excluded from means with ``nanmean``.

Family ``overlap``: the dataset value of a class is the NaN-ignoring mean of its per-scan scores;
``volume/<m>`` pools (sums) the counts of each volume's scans, then averages the volume scores
over volumes; ``pooled/<m>`` sums the counts of every scan of the set before the ratio.
"""

from __future__ import annotations

from typing import Any

import torch

from octseg.metrics._base import (
    BatchContext,
    MetricFamily,
    named,
    nanmean0,
    register_family,
    safe_div,
    volume_sum,
)

__all__ = [
    "OVERLAP_METRICS",
    "confusion_counts",
    "as_label_map",
    "compute_overlap_scores",
    "OverlapFamily",
]

#: Names of the overlap scores, in the order :func:`compute_overlap_scores` returns them.
OVERLAP_METRICS: tuple[str, ...] = (
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "accuracy",
    "balanced_accuracy",
)


def _argmax_channels(scores: torch.Tensor) -> torch.Tensor:
    """``scores.argmax(1)`` (first maximum wins), fast on CPU.

    PyTorch's CPU argmax over the channel dimension of ``[B, K, H, W]`` is a strided reduction,
    ~10x slower than ``amax``; the first channel reaching the maximum is found with a weighted
    ``amax`` instead. Falls back to ``argmax`` on GPU, for K > 255 and for NaN scores.
    """
    k = scores.shape[1]
    if scores.device.type != "cpu" or k > 255:
        return scores.argmax(dim=1)
    top = scores.amax(dim=1, keepdim=True)
    weights = torch.arange(k, 0, -1, dtype=torch.uint8, device=scores.device).view(1, k, 1, 1)
    first = ((scores == top).to(torch.uint8) * weights).amax(dim=1)
    if bool((first == 0).any()):  # NaN scores: no channel equals the maximum
        return scores.argmax(dim=1)
    return k - first.long()


def as_label_map(preds: torch.Tensor) -> torch.Tensor:
    """Turns logits/probabilities ``[B, K, H, W]`` into labels ``[B, H, W]``; passes labels.

    Args:
        preds: float scores ``[B, K, H, W]`` or integer labels ``[B, H, W]``.

    Returns:
        int64 labels ``[B, H, W]``.

    Raises:
        ValueError: if ``preds`` has another shape or is a float tensor with 3 dimensions.
    """
    if preds.ndim == 4:
        return _argmax_channels(preds)
    if preds.ndim == 3 and not preds.is_floating_point():
        return preds.long()
    raise ValueError(
        f"preds must be float scores [B, K, H, W] or integer labels [B, H, W], got "
        f"{tuple(preds.shape)} of dtype {preds.dtype}."
    )


def confusion_counts(
    preds: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = 255,
    check_preds: bool = True,
) -> torch.Tensor:
    """Per-image, per-class TP/FP/FN/TN from one batched bincount.

    Args:
        preds: integer labels ``[B, H, W]`` (or logits ``[B, K, H, W]``, argmax is taken).
        target: integer labels ``[B, H, W]``; pixels equal to ``ignore_index`` are not counted.
        num_classes: number of classes ``K``.
        ignore_index: label of unannotated pixels, or None.
        check_preds: verify that predicted labels lie in ``[0, K)`` (skip for argmax output).

    Returns:
        int64 ``[B, K, 4]`` holding (TP, FP, FN, TN) per image and class.

    Raises:
        ValueError: on shape mismatch or labels outside ``[0, K)`` (other than ``ignore_index``).
    """
    if preds.ndim == 4:
        check_preds = False  # argmax labels are in range by construction
    preds = as_label_map(preds)
    if preds.shape != target.shape or target.ndim != 3:
        raise ValueError(
            f"preds and target must both be [B, H, W] label maps, got {tuple(preds.shape)} and "
            f"{tuple(target.shape)}."
        )
    k = num_classes
    batch = target.shape[0]
    target = target.long()
    if target.numel() == 0:
        return torch.zeros(batch, k, 4, dtype=torch.long, device=target.device)
    if check_preds:
        p_min, p_max = torch.aminmax(preds)
        if int(p_min) < 0 or int(p_max) >= k:
            raise ValueError(
                f"predicted labels must lie in [0, {k}), got range [{int(p_min)}, {int(p_max)}]; "
                "check num_classes."
            )
    t_min, t_max = (int(v) for v in torch.aminmax(target))
    if t_min < 0 and t_min != ignore_index:
        raise ValueError(f"target labels must be >= 0 (or ignore_index), got {t_min}.")
    # One bincount over (image, true, pred) with true labels up to the largest present one
    # (ignore_index included): rows t >= K are then dropped, so ignored pixels need no mask.
    # Shift by one when ignore_index is negative so bincount sees non-negative indices.
    shift = 1 if t_min < 0 else 0
    rows = shift + max(t_max + 1, k)
    idx = torch.add(preds.long(), target + shift if shift else target, alpha=k)
    if batch > 1:
        idx += (torch.arange(batch, device=idx.device) * (rows * k)).view(batch, 1, 1)
    bins = torch.bincount(idx.reshape(-1), minlength=batch * rows * k).view(batch, rows, k)
    conf = bins[:, shift : shift + k]  # [B, true, pred]
    extra = torch.cat([bins[:, :shift], bins[:, shift + k :]], dim=1).sum(dim=(0, 2))
    labels_extra = [v - shift for v in range(rows) if v < shift or v >= shift + k]
    bad = [
        lab
        for lab, n in zip(labels_extra, extra.tolist(), strict=False)
        if n and lab != ignore_index
    ]
    if bad:
        raise ValueError(
            f"target labels must lie in [0, {k}) or equal ignore_index={ignore_index}, got "
            f"labels {bad[:5]}; check num_classes and ignore_index."
        )
    tp = conf.diagonal(dim1=1, dim2=2)
    fn = conf.sum(dim=2) - tp
    fp = conf.sum(dim=1) - tp
    total = conf.sum(dim=(1, 2)).view(batch, 1)
    tn = total - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], dim=-1)


def _ratio(num: torch.Tensor, den: torch.Tensor, empty_value: float) -> torch.Tensor:
    out = num / den.clamp_min(1e-300)
    return torch.where(den > 0, out, torch.full_like(out, empty_value))


def compute_overlap_scores(
    counts: torch.Tensor, empty_value: float = float("nan")
) -> dict[str, torch.Tensor]:
    """Overlap scores from TP/FP/FN/TN counts.

    Args:
        counts: ``[..., 4]`` counts (TP, FP, FN, TN), e.g. ``[B, K, 4]`` per image or ``[K, 4]``
            summed over a volume.
        empty_value: value of a score whose denominator is zero (e.g. Dice of a class absent
            from both masks). NaN (default) excludes it from ``nanmean``; 1.0 counts it as
            perfect.

    Returns:
        ``{name: float64 tensor [...]}`` for every name in :data:`OVERLAP_METRICS`.
        ``accuracy`` is the pixel accuracy of the one-vs-rest problem of the class,
        ``(TP + TN) / N``; ``balanced_accuracy`` is the mean of recall and specificity.
    """
    c = counts.double()
    tp, fp, fn, tn = c.unbind(-1)
    recall = _ratio(tp, tp + fn, empty_value)
    specificity = _ratio(tn, tn + fp, empty_value)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, empty_value),
        "iou": _ratio(tp, tp + fp + fn, empty_value),
        "precision": _ratio(tp, tp + fp, empty_value),
        "recall": recall,
        "specificity": specificity,
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, empty_value),
        "balanced_accuracy": (recall + specificity) / 2,
    }


@register_family("overlap")
class OverlapFamily(MetricFamily):
    """Dice, IoU, precision, recall, specificity, accuracy, balanced accuracy per class."""

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
        scores["pixel_accuracy"] = safe_div(counts[..., 0].sum(-1), total)
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
