"""SD-LayerNet's loss terms (Fazekas et al., MICCAI 2022; :mod:`octseg.models.sd_layernet`).

Each term reads the network's ``aux`` outputs; the supervised segmentation term also reads the
surface targets that :class:`~octseg.modules.sd_layernet.SDLayerNetModule` adds to the batch
(``surface_rows [B,S,W]`` float rows, ``surface_valid [B,W]`` bool, ``region_target [B,H,W]``
region index or ``ignore_index``). The official training step (``ABotond/SD-LayerNet``,
``model.py``) weighs them as (``conf/loss/sd_layernet.yaml`` and ``sd_layernet_unsup.yaml``):

* supervised: 0.1 KL + 50 segmentation + 1 reconstruction + 1 z-regression + topology +
  continuity + curvature;
* unsupervised: the same without segmentation, plus the spread prior.

Deviations: the position MSE compares ``positions / H`` with ``reference / H`` (the official
code divides only the reference by the image size, so positions in pixels meet targets in
[0, 1]); the Dice covers every region (the official boolean filter has 6 entries for 12 masks);
the ``diff_10`` term of the official step is left out (the official layer engine never computes
it: KeyError); columns without a reference (untraced, padding) count in no supervised term.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import GeneralizedDiceLoss
from torch import nn

from octseg.models.base import SegOutput

__all__ = [
    "ContinuityPrior",
    "CurvaturePrior",
    "LatentRegressionLoss",
    "MaskedReconstructionLoss",
    "SpreadPrior",
    "SurfaceSegmentationLoss",
    "TopologyPrior",
    "VAEKLLoss",
]

TARGET_KEYS = ("surface_rows", "surface_valid", "region_target")


def _aux(output: SegOutput, key: str, term: str) -> torch.Tensor:
    if key not in output.aux:
        raise KeyError(
            f"{term} reads output.aux[{key!r}], which the network does not return "
            f"(got {sorted(output.aux)}); use it with model=sd_layernet."
        )
    return output.aux[key]


class SurfaceSegmentationLoss(nn.Module):
    """KL(reference column distribution || predicted) + MSE of the corrected positions (both
    divided by H) + ``dice_weight`` x generalised Dice of the region masks.

    The reference distribution is one-hot at the reference row (clamped to ``H - 1``), so the
    KL is ``-log p(z)``; it is averaged as ``nn.KLDivLoss``'s default element mean (over
    surfaces, rows and annotated columns), i.e. divided by H, as in the official code.

    Args:
        dice_weight: weight of the generalised Dice (official 0.5).
        ignore_index: ``region_target`` value of pixels without a reference.
    """

    def __init__(self, dice_weight: float = 0.5, ignore_index: int = 255) -> None:
        super().__init__()
        self.dice_weight = float(dice_weight)
        self.ignore_index = int(ignore_index)
        self.dice = GeneralizedDiceLoss(include_background=True, smooth_nr=1e-5, smooth_dr=1e-5)

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        missing = [k for k in TARGET_KEYS if k not in batch]
        if missing:
            raise KeyError(
                f"SurfaceSegmentationLoss needs the batch keys {missing}, which "
                "SDLayerNetModule adds; train with model=sd_layernet."
            )
        logprob = _aux(output, "surface_logprob", "SurfaceSegmentationLoss").float()
        positions = _aux(output, "positions", "SurfaceSegmentationLoss").float()
        regions = _aux(output, "regions", "SurfaceSegmentationLoss").float()
        height = logprob.shape[2]
        rows = batch["surface_rows"].to(logprob.device, torch.float32)
        valid = batch["surface_valid"].to(logprob.device)[:, None, :].expand_as(rows)
        if not bool(valid.any()):
            return logprob.sum() * 0.0
        index = rows.round().long().clamp(0, height - 1).unsqueeze(2)  # [B, S, 1, W]
        nll = -logprob.gather(2, index).squeeze(2)  # [B, S, W]
        kl = nll[valid].mean() / height
        mse = F.mse_loss(positions[valid] / height, rows[valid] / height)
        target = batch["region_target"].to(logprob.device)
        known = (target != self.ignore_index).unsqueeze(1).float()
        one_hot = F.one_hot(
            torch.where(target == self.ignore_index, 0, target), regions.shape[1]
        ).permute(0, 3, 1, 2)
        dice = self.dice(regions * known, one_hot.float() * known)
        return kl + mse + self.dice_weight * dice


class VAEKLLoss(nn.Module):
    """KL divergence of ``N(mu, exp(logvar))`` from ``N(0, I)``, summed over ``z``, averaged
    over the batch."""

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        mu = _aux(output, "z_mu", "VAEKLLoss").float()
        logvar = _aux(output, "z_logvar", "VAEKLLoss").float()
        return (-0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1)).mean()


class MaskedReconstructionLoss(nn.Module):
    """L1 between the reconstruction and the image, outside the top and bottom regions of the
    hard anatomy (vitreous and below the last surface); over the whole image when at most one
    pixel remains (official rule)."""

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        recon = _aux(output, "recon", "MaskedReconstructionLoss").float()
        hard = _aux(output, "hard_anatomy", "MaskedReconstructionLoss")
        image = batch["image"].to(recon.dtype)
        keep = ((hard[:, :1] + hard[:, -1:]) < 0.5).expand_as(recon)
        error = (recon - image).abs()
        return error[keep].mean() if int(keep.sum()) > 1 else error.mean()


class LatentRegressionLoss(nn.Module):
    """L1 between ``z`` re-encoded from the (detached) reconstruction and the (detached)
    ``mu``: trains the encoder to read back the appearance it gave the decoder."""

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        z_est = _aux(output, "z_est", "LatentRegressionLoss").float()
        return (z_est - _aux(output, "z_mu", "LatentRegressionLoss").detach().float()).abs().mean()


class TopologyPrior(nn.Module):
    """Sum of the topology violations (a surface below the next one, pixels) divided by the
    width (official: by the image size)."""

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        violations = _aux(output, "topology", "TopologyPrior").float()
        return F.relu(violations).sum() / violations.shape[-1]


class ContinuityPrior(nn.Module):
    """Sum of ``relu(|z(x+1) - z(x)| - threshold)`` divided by the width.

    Args:
        threshold: allowed jump between neighbouring columns, pixels (official 1.5).
    """

    def __init__(self, threshold: float = 1.5) -> None:
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        jumps = _aux(output, "continuity", "ContinuityPrior").float()
        return F.relu(jumps - self.threshold).sum() / (jumps.shape[-1] + 1)


class CurvaturePrior(nn.Module):
    """Mean of ``relu(|kappa| - limit)`` (limits estimated from the training labels; zero
    while they are unset)."""

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        return F.relu(_aux(output, "curvature_excess", "CurvaturePrior").float()).mean()


class SpreadPrior(nn.Module):
    """Mean of ``relu(std - threshold)`` of the column distributions (unsupervised term: peaked
    distributions without a reference).

    Args:
        threshold: allowed standard deviation, pixels (official 1).
    """

    def __init__(self, threshold: float = 1.0) -> None:
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        spread = _aux(output, "position_std", "SpreadPrior").float()
        return F.relu(spread - self.threshold).mean()
