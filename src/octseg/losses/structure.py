"""The structure loss of MSNet/M2SNet (weighted BCE + weighted IoU), generalised to K classes.

Zhao X., Zhang L., Lu H., MICCAI 2021 (MSNet) and Zhao X. et al., arXiv:2303.10894, 2023
(M2SNet); official ``structure_loss`` in ``Xiaoqi-Zhao-DLUT/MSNet-M2SNet/train.py`` (itself from
F3Net, Wei et al., AAAI 2020). For a binary mask ``y`` and logit ``z``, with
``w = 1 + 5 |avgpool_31(y) - y|`` (large near region borders; 31 x 31 mean, stride 1, zero
padding counted)::

    wBCE = sum(w * BCE(sigmoid(z), y)) / sum(w)
    wIoU = 1 - (sum(w p y) + 1) / (sum(w (p + y)) - sum(w p y) + 1),   p = sigmoid(z)

per image, averaged over the batch.

**K classes (OCTSeg's generalisation).** The official loss has one sigmoid channel. Here the
network's ``K`` logits go through a softmax and every class ``k`` is scored one-vs-rest with
``p = softmax(z)_k`` and ``y = [label == k]``: its own border weights, weighted BCE and weighted
IoU, per image; the loss is the mean over images and classes (``include_background=false``
leaves class 0 out). With ``K = 2`` and background excluded this is exactly the official loss of
the logit difference ``z_1 - z_0`` (``softmax(z)_1 = sigmoid(z_1 - z_0)``; tested).
``log(1 - p)`` is computed from the log-softmax as ``log(-expm1(log p))`` with ``p`` capped at
``1 - 1e-6`` (like torch's BCE, which caps the log instead), so it is finite and differentiable.

Pixels with ``ignore_index`` count nowhere: they are outside every class when the border
weights are pooled and are left out of all sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from octseg.losses.terms import masked_one_hot
from octseg.models.base import SegOutput

__all__ = ["StructureLoss", "border_weights", "structure_loss"]

P_MAX = 1.0 - 1e-6  # softmax probabilities are capped here inside log(1 - p)


def _check_kernel_size(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"StructureLoss needs an odd kernel_size (loss.terms.<name>.kernel_size), got "
            f"{kernel_size}."
        )


def border_weights(target: torch.Tensor, kernel_size: int = 31, gain: float = 5.0) -> torch.Tensor:
    """The official pixel weights ``1 + gain * |avgpool_k(y) - y|`` of binary maps ``[B,K,H,W]``.

    Raises:
        ValueError: if ``kernel_size`` is not a positive odd number.
    """
    _check_kernel_size(kernel_size)
    pooled = F.avg_pool2d(target, kernel_size, stride=1, padding=kernel_size // 2)
    return 1.0 + gain * (pooled - target).abs()


def structure_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    include_background: bool = True,
    kernel_size: int = 31,
    gain: float = 5.0,
) -> torch.Tensor:
    """K-class structure loss of raw ``logits [B,K,H,W]`` against labels ``target [B,H,W]``.

    Returns:
        A scalar: weighted BCE + weighted IoU, averaged over images and (scored) classes.

    Raises:
        ValueError: if ``K < 2`` (a softmax needs two classes) or the labels are out of range.
    """
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(
            f"StructureLoss scores softmax classes and needs at least 2 logits, got {num_classes}"
            " (dataset.num_classes)."
        )
    logits = logits.float()
    one_hot, valid = masked_one_hot(target, num_classes, ignore_index)
    weight = border_weights(one_hot, kernel_size, gain) * valid
    log_p = logits.log_softmax(dim=1)
    log_not_p = torch.log(-torch.expm1(log_p.clamp(max=math.log(P_MAX))))
    bce = -(one_hot * log_p + (1.0 - one_hot) * log_not_p)
    dims = (2, 3)
    # An image without annotated pixels has zero weight everywhere: it adds nothing.
    wbce = (weight * bce).sum(dims) / weight.sum(dims).clamp_min(1e-12)
    prob = log_p.exp()
    inter = (weight * prob * one_hot).sum(dims)
    union = (weight * (prob + one_hot)).sum(dims)
    wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
    per_class = wbce + wiou
    if not include_background:
        per_class = per_class[:, 1:]
    return per_class.mean()


class StructureLoss(nn.Module):
    """Objective term: :func:`structure_loss` of ``output.logits`` against ``batch["mask"]``.

    Args:
        ignore_index: label excluded from every sum.
        include_background: whether class 0 is scored.
        kernel_size: window of the border-weight average (official 31).
        gain: border-weight gain (official 5).
    """

    def __init__(
        self,
        ignore_index: int = 255,
        include_background: bool = True,
        kernel_size: int = 31,
        gain: float = 5.0,
    ) -> None:
        super().__init__()
        _check_kernel_size(kernel_size)
        self.ignore_index = ignore_index
        self.include_background = include_background
        self.kernel_size = kernel_size
        self.gain = gain

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits [B,K,H,W]`` against ``target [B,H,W]`` (for deep supervision)."""
        return structure_loss(
            logits,
            target,
            self.ignore_index,
            self.include_background,
            self.kernel_size,
            self.gain,
        )

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.compute(output.logits, batch["mask"])
