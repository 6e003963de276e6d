"""ReLayNet's loss: weighted multinomial logistic loss plus Dice loss.

Roy A.G. et al., "ReLayNet: retinal layer and fluid segmentation of macular optical coherence
tomography using fully convolutional networks", Biomed. Opt. Express 8(8):3627-3642, 2017,
section 2 ("loss function"), arXiv:1704.02161. The paper trains with

    L = lambda_1 * L_logloss + lambda_2 * L_dice (+ lambda_3 * ||W||_F^2, i.e. weight decay),
    L_logloss = - sum_x w(x) * log p_{l(x)}(x),
    w(x) = 1 + omega_1 * I(|grad l(x)| > 0) + omega_2 * I(l(x) in {retinal layers, fluid}),

with omega_1 = 10, omega_2 = 5, lambda_1 = 1, lambda_2 = 0.5 (lambda_3 = 1e-4 is weight decay).

Provenance of the constants. The form of ``w`` and of the joint loss are the paper's. The values
are those of OCTSeg's methods catalogue, corroborated by an independent TensorFlow
re-implementation, ``skyfu1022/ReLayNet-tensorflow``: ``configs/relaynet.json`` sets ``w1 = 10``,
``w2 = 5``, ``alpha = 1``, ``beta = 0.5`` (and the recipe: lr 0.1, momentum 0.95, weight decay
1e-4, batch 8, 60 epochs, 496 x 64 slabs, 10 classes); its ``utils/ops.py`` builds
``w = 1 + w1 * contour + w2 * [label not in {0, 8}]`` (0 = above the ILM, 8 = below the RPE, so
the seven layers and fluid are boosted),
a per-image, per-class Dice with squared denominators, and the total
``alpha * weighted log loss + beta * Dice``.

What the official releases do:

* MatConvNet (``ai-med/ReLayNet``, ``ReLayNet.m``): ``LossSemantic('weights', 1)`` is a
  *switch* that makes ``vl_nnlossSemantic`` use the second label channel (the precomputed ``w``,
  values not in the code) as pixel weights; it is not a loss weight. ``LossDice('weights', 1)``
  scales the Dice gradient by 1. The release leaves ``derOutputs`` at the trainer default
  (``{'objective', 1}``, a name that matches neither loss layer), so it does not state the balance
  it trained with. Even with both at 1 the balance is not 1 : 1 of two means: the log loss is
  normalised by the number of labelled pixels of the batch, while ``vl_nnlossDice``'s backward
  pass is the derivative of the *sum* of ``1 - Dice`` over classes and images (its forward
  reports the mean), K x B times the gradient of a mean Dice.
* PyTorch (``ai-med/relaynet_pytorch`` after its June 2018 "Bug Fixes" commit, the released
  version): ``CrossEntropyLoss`` on logits reduced to the batch mean and *then* multiplied by
  ``w`` and averaged, so ``w`` only rescales the loss by its mean instead of weighting pixels,
  plus a Dice (weight 1) that exponentiates softmax probabilities.

OCTSeg trains ``1.0 * weighted log loss + 0.5 * Dice`` of two means (paper, TensorFlow
re-implementation); ``loss.weights.dice=1.0`` gives a plain 1 : 1. The official code precomputes
``w`` in the data pipeline and stores it next to the labels; here it is computed on the fly from
the (already augmented) mask inside the term, which is the same map and stays correct under
geometric augmentation. The log loss is normalised by the number of annotated pixels, as the
MatConvNet release does (``vl_nnlossSemantic``: sum / n), not by the sum of weights.

Definition choices where the paper is not explicit:

* "boundary" (``|grad l| > 0``) = a pixel whose label differs from one of its 4-neighbours, so
  both sides of every transition are boosted; neighbours carrying ``ignore_index`` (untraced
  columns, batch padding) never create a boundary;
* ignored pixels get weight 0 and count nowhere;
* the Dice part is the soft Dice of softmax probabilities per image and class, averaged over
  classes (background included) with squared terms in the denominator
  (``1 - 2 sum p g / (sum p^2 + sum g^2)``) as the paper writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from octseg.losses.terms import masked_one_hot
from octseg.models.base import SegOutput

__all__ = ["boundary_mask", "relaynet_weight_map", "ReLayNetWeightedCE", "ReLayNetDice"]


def boundary_mask(target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Marks pixels whose label differs from a 4-neighbour's (both labels annotated).

    Args:
        target: labels ``[B, H, W]`` (int64).
        ignore_index: label of unannotated pixels.

    Returns:
        Bool ``[B, H, W]``, True on label transitions.
    """
    valid = target != ignore_index
    edge = torch.zeros_like(valid)
    # Vertical and horizontal neighbour pairs; a differing valid pair marks both pixels.
    dv = (target[:, 1:, :] != target[:, :-1, :]) & valid[:, 1:, :] & valid[:, :-1, :]
    dh = (target[:, :, 1:] != target[:, :, :-1]) & valid[:, :, 1:] & valid[:, :, :-1]
    edge[:, 1:, :] |= dv
    edge[:, :-1, :] |= dv
    edge[:, :, 1:] |= dh
    edge[:, :, :-1] |= dh
    return edge


def relaynet_weight_map(
    target: torch.Tensor,
    weighted_labels: Sequence[int],
    boundary_weight: float = 10.0,
    class_weight: float = 5.0,
    ignore_index: int = 255,
) -> torch.Tensor:
    """ReLayNet's per-pixel weights ``1 + omega_1 * boundary + omega_2 * [layer or fluid]``.

    Args:
        target: labels ``[B, H, W]``.
        weighted_labels: labels boosted by ``class_weight`` (retinal layers and fluid).
        boundary_weight: omega_1 (paper: 10).
        class_weight: omega_2 (paper: 5).
        ignore_index: label of unannotated pixels, which get weight 0.

    Returns:
        Float ``[B, H, W]`` weights.
    """
    weights = 1.0 + boundary_weight * boundary_mask(target, ignore_index).float()
    if len(weighted_labels):
        labels = torch.as_tensor(list(weighted_labels), device=target.device)
        weights = weights + class_weight * torch.isin(target, labels).float()
    return weights * (target != ignore_index).float()


class ReLayNetWeightedCE(nn.Module):
    """Weighted multinomial logistic loss with ReLayNet's on-the-fly weight map.

    Args:
        layer_labels: labels of the retinal layers (boosted by ``class_weight``).
        fluid_labels: labels of fluid (boosted by ``class_weight``).
        boundary_weight: omega_1 (paper: 10).
        class_weight: omega_2 (paper: 5).
        ignore_index: label excluded from the loss.
    """

    def __init__(
        self,
        layer_labels: Sequence[int],
        fluid_labels: Sequence[int] = (),
        boundary_weight: float = 10.0,
        class_weight: float = 5.0,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.weighted_labels = [int(v) for v in [*layer_labels, *fluid_labels]]
        self.boundary_weight = float(boundary_weight)
        self.class_weight = float(class_weight)
        self.ignore_index = ignore_index

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of raw ``logits [B,K,H,W]`` against ``target [B,H,W]``."""
        weights = relaynet_weight_map(
            target,
            self.weighted_labels,
            self.boundary_weight,
            self.class_weight,
            self.ignore_index,
        )
        nll = F.cross_entropy(
            logits.float(), target, ignore_index=self.ignore_index, reduction="none"
        )
        n_valid = (target != self.ignore_index).sum().clamp_min(1)
        return (weights * nll).sum() / n_valid

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.compute(output.logits, batch["mask"])


class ReLayNetDice(nn.Module):
    """Soft Dice loss of the paper: per image and class, squared denominator, class mean.

    Args:
        ignore_index: label excluded (its pixels count neither as prediction nor target).
        include_background: keep class 0 in the class mean (ReLayNet: yes, all classes).
        squared: ``sum p^2 + sum g^2`` in the denominator (paper) instead of ``sum p + sum g``.
    """

    def __init__(
        self, ignore_index: int = 255, include_background: bool = True, squared: bool = True
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.dice = DiceLoss(
            include_background=include_background,
            squared_pred=squared,
            batch=False,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of raw ``logits [B,K,H,W]`` against ``target [B,H,W]``."""
        one_hot, valid = masked_one_hot(target, logits.shape[1], self.ignore_index)
        return self.dice(logits.float().softmax(dim=1) * valid, one_hot)

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.compute(output.logits, batch["mask"])
