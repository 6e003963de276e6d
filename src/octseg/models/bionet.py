"""BioNet: biomarker-infused global-to-local choroid segmentation.

Zhang H., Yang J., Zhou K., Fang L., Li F., Hu Y., Zhao Y., Zhang X., Liu J., "Automatic
Segmentation and Visualization of Choroid in OCT with Knowledge Infused Deep Learning", IEEE
JBHI 24(12):3408-3420, 2020, doi:10.1109/JBHI.2020.3023144; earlier version "BioNet: Infusing
Biomarker Prior into Global-to-Local Network for Choroid Segmentation in OCT Images",
arXiv:1912.05090. No official code was found; the structure follows the paper's description as
summarised in the project's methods catalogue and the seed re-implementation
(``Layers_Segment/BioNet_2020.py``).

Three networks:

* **GMS** (global multi-layer segmentation): a U-Net that segments every label of the dataset
  (12 layers in the paper; Duke DME: its 10 labels).
* **LCS** (local choroid segmentation): a U-Net on ``[image, softmax(GMS)]`` that segments the
  choroid against everything else (binary). Both U-Nets are the seed's: 64-128-256-512, three
  2x2 max-poolings, ``(conv3x3 -> BN -> ReLU) x 2``, 2x2 transposed convolutions
  (:class:`~octseg.models.unet.UNet` with ``depth=3``).
* **Biomarker network** (:class:`BiomarkerNet`): predicts the choroid thickness of every column
  (A-scan) from a choroid probability map. It is trained first on ground-truth masks, then
  frozen and used as a regulariser of LCS (the two stages live in
  :class:`~octseg.modules.two_stage.BioNetModule`; the loss in :mod:`octseg.losses.biomarker`).

The segmentation returned as ``logits`` combines both U-Nets (:func:`fuse_choroid_logits`): LCS
decides choroid or not, GMS which label within that group, so the dataset's full label map is
predicted and evaluated, its choroid being LCS's.

Parameters (1 input channel): GMS 7,699,724 at 12 classes and LCS 7,705,986 at 13 input
channels and 2 classes (the seed's 7.70 M and 7.71 M, whose convolutions carry a bias that the
BatchNorm makes redundant: 7,702,540 and 7,708,802); biomarker network 11,192,934 (the seed's
ResNet-18 trunk, 11,176,512, with a per-column head instead of ``Linear(512, 1)``: seed 11.18 M).

Deviations from the seed (and the catalogue's list of its defects):

* **Per-column thickness.** The seed's bio head returns one scalar per image from
  ``cat[image, raw LCS logits]`` with no target and no loss, trained jointly with the
  segmenters. Here it sees the choroid probability map only (1 channel -> the seed's 1x1 conv
  to 3 channels -> ResNet-18 trunk), averages the 1/32 feature map over depth and maps each of
  its columns to the thicknesses of the 32 image columns it covers (a 1x1 ``Conv1d``), so any
  width works. Its output is scaled by ``output_scale`` (100 px) so that a randomly initialised
  head starts near the right order of magnitude.
* **No ImageNet download.** The seed calls ``resnet18(pretrained=True)``. The trunk is random
  unless ``weights`` names a torchvision ResNet-18 state-dict file supplied by the user.
* **Probabilities, not logits**, go into LCS (``softmax(GMS)``) and into the biomarker network
  (``softmax(LCS)``); raw logits come out.
* **Duke DME.** Duke has no choroid label: below Bruch's membrane is one region (label 8,
  "choroid" in the class names, extending to the image bottom). ``choroid_labels`` (default
  ``[8]``) says which labels LCS segments; on Duke the "thickness" is the depth of the imaged
  region below BM in each A-scan, not the choroid-sclera interface the paper measures.
* Any ``H x W``: the U-Nets need multiples of 8 (:class:`~octseg.models.wrappers.PadToDivisor`
  pads), the biomarker network zero-pads its input to multiples of 32 itself and crops its
  output to the input width.
* The paper's shadow-removal GAN (visualisation) is out of scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from octseg.models.base import SegOutput
from octseg.models.unet import UNet

__all__ = ["BioNet", "BiomarkerNet", "choroid_lookup", "fuse_choroid_logits"]


def choroid_lookup(choroid_labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """``[K]`` long lookup: 1 for the choroid labels, 0 for the others.

    Raises:
        ValueError: if the labels are empty, repeated, outside ``0..K-1`` or cover every label.
    """
    labels = [int(k) for k in choroid_labels]
    hint = (
        "Set model.net.choroid_labels to the dataset's choroid label(s), e.g. [8] for Duke DME "
        "(the region below Bruch's membrane)."
    )
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"BioNet choroid_labels={labels} must be non-empty and unique. {hint}")
    if any(k < 0 or k >= num_classes for k in labels) or len(labels) == num_classes:
        raise ValueError(
            f"BioNet choroid_labels={labels} must be some, not all, of the labels "
            f"0..{num_classes - 1} (num_classes={num_classes}). {hint}"
        )
    lookup = torch.zeros(num_classes, dtype=torch.long)
    lookup[labels] = 1
    return lookup


def fuse_choroid_logits(
    gms: torch.Tensor, lcs: torch.Tensor, lookup: torch.Tensor
) -> torch.Tensor:
    """Dataset logits ``[B, K, H, W]`` from GMS ``[B, K, H, W]`` and LCS ``[B, 2, H, W]``.

    Group = choroid or not (``lookup``). Each label gets LCS's log-probability of its group plus
    GMS's logit relative to the best label of the group:
    ``fused_k = log p_LCS(g(k)) + gms_k - max_{j in g(k)} gms_j``. So the argmax is LCS's choroid
    decision, and GMS's label within the chosen group; within a group the softmax keeps GMS's
    proportions, and a group's best label carries LCS's probability of the group.
    """
    groups = torch.log_softmax(lcs.float(), dim=1).to(gms.dtype)
    fused = torch.empty_like(gms)
    for group in (0, 1):
        labels = [k for k, g in enumerate(lookup.tolist()) if g == group]
        part = gms[:, labels]
        best = part.max(dim=1, keepdim=True).values
        fused[:, labels] = groups[:, group : group + 1] + (part - best)
    return fused


class BiomarkerNet(nn.Module):
    """Per-column choroid thickness from a choroid probability map (ResNet-18 trunk).

    Args:
        in_channels: channels of the map (1: the choroid probability).
        output_scale: the head predicts thickness in units of this many pixels (or um).
        weights: optional path of a torchvision ResNet-18 state dict (e.g. ImageNet weights the
            user downloaded); the ``fc`` entries are ignored. Nothing is ever downloaded.

    Raises:
        FileNotFoundError: if ``weights`` names a missing file.

    Examples::

        >>> bio = BiomarkerNet()
        >>> bio(torch.zeros(2, 1, 100, 70)).shape
        torch.Size([2, 70])
    """

    size_divisor = 32
    requires_square = False

    def __init__(
        self, in_channels: int = 1, output_scale: float = 100.0, weights: str | None = None
    ) -> None:
        super().__init__()
        self.output_scale = float(output_scale)
        # The seed's adapter from the map to ResNet's three input channels.
        self.stem = nn.Conv2d(in_channels, 3, kernel_size=1)
        trunk = torchvision.models.resnet18(weights=None)
        if weights is not None:
            _load_resnet_weights(trunk, weights)
        trunk.fc = nn.Identity()
        trunk.avgpool = nn.Identity()
        self.trunk = trunk
        self.head = nn.Conv1d(512, self.size_divisor, kernel_size=1)

    def forward(self, choroid: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, W)`` thickness per column, in the loss's unit."""
        h, w = choroid.shape[-2:]
        pad_h, pad_w = -h % self.size_divisor, -w % self.size_divisor
        x = self.stem(F.pad(choroid, (0, pad_w, 0, pad_h)))
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        x = t.layer4(t.layer3(t.layer2(t.layer1(x))))
        columns = self.head(x.mean(dim=2))  # [B, 32, W/32]: 32 image columns per feature column
        thickness = columns.transpose(1, 2).reshape(x.shape[0], -1)
        return self.output_scale * thickness[:, :w]


def _load_resnet_weights(trunk: nn.Module, path: str) -> None:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"BiomarkerNet weights file {file} does not exist (model.biomarker.weights): give "
            "the path of a torchvision ResNet-18 state dict, or null for random weights."
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    trunk.load_state_dict(state, strict=False)
    missing = [k for k in trunk.state_dict() if not k.startswith("fc.") and k not in state]
    if missing:
        raise ValueError(
            f"BiomarkerNet weights file {file} is not a ResNet-18 state dict: it lacks "
            f"{missing[:3]} (model.biomarker.weights)."
        )


class BioNet(nn.Module):
    """GMS and LCS U-Nets with fused dataset logits.

    Args:
        in_channels: image channels.
        num_classes: the dataset's labels (GMS's classes).
        choroid_labels: the labels LCS segments as choroid (Duke DME: ``[8]``, below BM).
        base_channels: first-level width of both U-Nets (seed: 64).
        depth: max-poolings of both U-Nets (seed: 3).

    Returns (``forward``): :class:`SegOutput` with the fused ``logits [B, K, H, W]`` and
    ``aux["gms_logits"]``, ``aux["lcs_logits"] [B, 2, H, W]`` and ``aux["lcs_target_map"]``
    (the label -> choroid lookup the losses use).

    Examples::

        >>> net = BioNet(1, 10, choroid_labels=[8], base_channels=8)
        >>> net(torch.zeros(1, 1, 64, 96)).logits.shape
        torch.Size([1, 10, 64, 96])
    """

    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        choroid_labels: Sequence[int] = (8,),
        base_channels: int = 64,
        depth: int = 3,
    ) -> None:
        super().__init__()
        self.register_buffer(
            "lcs_target_map", choroid_lookup(choroid_labels, num_classes), persistent=False
        )
        self.gms = UNet(in_channels, num_classes, base_channels, depth)
        self.lcs = UNet(in_channels + num_classes, 2, base_channels, depth)
        self.size_divisor = self.gms.size_divisor

    def forward(self, x: torch.Tensor) -> SegOutput:
        """``(B, C_in, H, W)`` -> fused logits ``(B, K, H, W)`` and the stage outputs."""
        gms = self.gms(x)
        lcs = self.lcs(torch.cat((x, gms.softmax(dim=1).to(x.dtype)), dim=1))
        return SegOutput(
            logits=fuse_choroid_logits(gms, lcs, self.lcs_target_map),
            aux={"gms_logits": gms, "lcs_logits": lcs, "lcs_target_map": self.lcs_target_map},
        )
