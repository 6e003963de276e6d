"""Reusable loss terms following the :class:`octseg.losses.objective.Objective` contract.

All terms honour ``ignore_index`` (unannotated columns, batch padding): ignored pixels add
nothing to the loss or its gradient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from octseg.models.base import SegOutput

__all__ = [
    "DiceCELoss",
    "SoftDiceLoss",
    "DeepSupervisionLoss",
    "check_labels",
    "check_term",
    "masked_one_hot",
]


def check_labels(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Raises a ValueError naming the offending labels if ``target`` holds labels outside
    ``0..num_classes-1`` other than ``ignore_index``."""
    bad_mask = ((target >= num_classes) | (target < 0)) & (target != ignore_index)
    if bool(bad_mask.any()):
        bad = torch.unique(target[bad_mask]).tolist()
        raise ValueError(
            f"Mask holds labels {bad} outside 0..{num_classes - 1} (ignore_index={ignore_index}); "
            "check dataset.num_classes and dataset.ignore_index."
        )


def check_term(term: nn.Module, owner: str) -> None:
    """Raises a TypeError unless ``term`` has the ``compute(logits, target)`` method that the
    wrapping term ``owner`` (e.g. ``"DeepSupervisionLoss"``) calls."""
    if not hasattr(term, "compute"):
        raise TypeError(
            f"{owner} needs a term with compute(logits, target); got {type(term).__name__}."
        )


def masked_one_hot(
    target: torch.Tensor, num_classes: int, ignore_index: int, validate: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot encodes ``target [B,H,W]`` to ``[B,K,H,W]`` with all-zero vectors at ignored
    pixels, and returns it with the float valid mask ``[B,1,H,W]``. ``validate=False`` skips
    :func:`check_labels` for callers that already ran it on the same target."""
    if validate:
        check_labels(target, num_classes, ignore_index)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    one_hot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).to(torch.float32)
    valid_f = valid.unsqueeze(1).to(torch.float32)
    return one_hot * valid_f, valid_f


class DiceCELoss(nn.Module):
    """Cross-entropy plus soft Dice on softmax probabilities.

    Cross-entropy is torch's (it supports ``ignore_index`` and class weights); the Dice part is
    MONAI's ``DiceLoss`` on masked probabilities and one-hot targets (MONAI's own ``DiceCELoss``
    has no ignore label, which Duke's untraced columns and batch padding need).

    Args:
        ignore_index: label excluded from both parts.
        ce_weight: weight of the cross-entropy part.
        dice_weight: weight of the Dice part.
        include_background: whether class 0 counts in the Dice mean.
        class_weights: optional per-class cross-entropy weights (length K).
        batch_dice: compute Dice over the whole batch (stabler for thin layers) rather than
            per image.
    """

    def __init__(
        self,
        ignore_index: int = 255,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        include_background: bool = True,
        class_weights: Sequence[float] | None = None,
        batch_dice: bool = True,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        weights = None
        if class_weights is not None:
            weights = torch.as_tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.dice = DiceLoss(
            include_background=include_background,
            batch=batch_dice,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of raw ``logits [B,K,H,W]`` against ``target [B,H,W]``."""
        logits = logits.float()
        check_labels(target, logits.shape[1], self.ignore_index)
        loss = logits.new_zeros(())
        if self.ce_weight:
            ce = F.cross_entropy(
                logits, target, weight=self.class_weights, ignore_index=self.ignore_index
            )
            # A batch made only of ignored pixels gives NaN; it should contribute nothing.
            loss = loss + self.ce_weight * torch.nan_to_num(ce, nan=0.0)
        if self.dice_weight:
            one_hot, valid = masked_one_hot(
                target, logits.shape[1], self.ignore_index, validate=False
            )
            probs = logits.softmax(dim=1) * valid
            loss = loss + self.dice_weight * self.dice(probs, one_hot)
        return loss

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.compute(output.logits, batch["mask"])


class SoftDiceLoss(nn.Module):
    """``1 - soft Dice`` of softmax probabilities against one-hot targets, over the whole batch.

    Args:
        ignore_index: label excluded (its pixels count in neither sum).
        smooth: added to numerator and denominator.
        pool_classes: ``True``: one Dice over all classes and pixels together (RetiFluidNet's
            official ``dice_coeff``: one-hot and probabilities flattened, background included);
            ``False``: the mean of per-class Dice scores.
        include_background: whether class 0 counts (both modes).
    """

    def __init__(
        self,
        ignore_index: int = 255,
        smooth: float = 1.0,
        pool_classes: bool = True,
        include_background: bool = True,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = float(smooth)
        self.pool_classes = bool(pool_classes)
        self.include_background = bool(include_background)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of raw ``logits [B,K,H,W]`` against ``target [B,H,W]``."""
        logits = logits.float()
        one_hot, valid = masked_one_hot(target, logits.shape[1], self.ignore_index)
        probs = logits.softmax(dim=1) * valid
        if not self.include_background:
            probs, one_hot = probs[:, 1:], one_hot[:, 1:]
        dims = (0, 1, 2, 3) if self.pool_classes else (0, 2, 3)
        inter = (probs * one_hot).sum(dims)
        total = probs.sum(dims) + one_hot.sum(dims)
        dice = (2.0 * inter + self.smooth) / (total + self.smooth)
        return 1.0 - dice.mean()

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.compute(output.logits, batch["mask"])


class DeepSupervisionLoss(nn.Module):
    """Applies a term to the full-resolution logits and to every deep-supervision output.

    Deep-supervision logits are read from ``output.aux["deep_supervision"]`` (finest first).
    Outputs at a lower resolution are scored against the mask downsampled with nearest
    neighbour (nnU-Net's choice). Weights default to nnU-Net's: halving per level, normalised
    to sum to 1.

    Args:
        term: a module with a ``compute(logits, target)`` method (e.g. :class:`DiceCELoss`).
        weights: one weight per output, full resolution first.
        normalise: divide the weights by their sum (nnU-Net); ``False`` uses them as given
            (RetiFluidNet's 1, 1, 1/2, 1/4, 1/8).
    """

    def __init__(
        self, term: nn.Module, weights: Sequence[float] | None = None, normalise: bool = True
    ) -> None:
        super().__init__()
        check_term(term, "DeepSupervisionLoss")
        self.term = term
        self.weights = None if weights is None else [float(w) for w in weights]
        self.normalise = bool(normalise)

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        extra = list(output.aux.get("deep_supervision", []))
        outputs = [output.logits, *extra]
        weights = self.weights or [0.5**i for i in range(len(outputs))]
        if len(weights) < len(outputs):
            raise ValueError(
                f"DeepSupervisionLoss got {len(outputs)} outputs but {len(weights)} weights."
            )
        weights = weights[: len(outputs)]
        norm = sum(weights) if self.normalise else 1.0
        target = batch["mask"]
        total = output.logits.new_zeros((), dtype=torch.float32)
        for w, logits in zip(weights, outputs, strict=True):
            t = target
            if logits.shape[-2:] != target.shape[-2:]:
                t = F.interpolate(target[:, None].float(), size=logits.shape[-2:], mode="nearest")
                t = t[:, 0].long()
            total = total + (w / norm) * self.term.compute(logits, t)
        return total
