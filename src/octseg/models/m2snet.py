"""M2SNet: multi-scale in multi-scale subtraction network (and MSNet, its predecessor).

Zhao X., Jia H., Pang Y., Lv L., Tian F., Zhang L., Sun W., Lu H., "M2SNet: Multi-scale in
Multi-scale Subtraction Network for Medical Image Segmentation", arXiv:2303.10894, 2023; built on
Zhao X., Zhang L., Lu H., "Automatic Polyp Segmentation via Multi-scale Subtraction Network"
(MSNet), MICCAI 2021, LNCS 12901:120-130, doi:10.1007/978-3-030-87193-2_12. The authors placed
2nd in the MICCAI 2022 GOALS OCT layer challenge with it. Official code:
``Xiaoqi-Zhao-DLUT/MSNet-M2SNet`` (``model/miccai_msnet.py``, ``train.py``); this file is written
from the papers' description and a reading of that code, nothing copied.

Structure (as the official ``M2SNet``):

* **Encoder**: Res2Net-50 v1b, 26w x 4s (deep 3-conv stem, average-pool shortcuts), built by timm
  (``res2net50d`` is that structure) without its classifier. Features: the stem after max-pooling
  (64 ch, 1/4) and the four stages (256..2048 ch, 1/4..1/32).
* Stages 1-4 are reduced to 64 channels by ``conv3x3 + BN + ReLU``; the stem features are used
  as they are (64 channels already).
* **Subtraction units** (:meth:`M2SNet.subtract`): for a coarser map ``A`` (bilinearly upsampled)
  and a finer map ``B``, ``|A - B| + sum_k |F_k(A) - F_k(B)|`` followed by ``conv3x3 + BN +
  ReLU``, where ``F_k`` (:class:`AllOnesFilter`, the official ``CNN1``) is a **fixed all-ones**
  ``k x k`` convolution over all channels (k = 3, 5; a buffer, no parameters) followed by a
  learnable BatchNorm and ReLU. As upstream, one ``F_3`` and one ``F_5`` (with their BatchNorms)
  are shared by all units.
* A triangular **pyramid** of units: level 1 subtracts neighbouring features (4 units), level 2
  neighbouring level-1 outputs (3), level 3 (2), level 4 (1; its coarser input passes one more
  ``conv3x3 + BN + ReLU`` first, upstream's ``x5_dem_4``). The outputs of each scale are summed
  (and refined by ``conv3x3 + BN + ReLU`` except at the coarsest).
* **Decoder**: top-down from a second 64-channel reduction of the 1/32 features, adding each
  scale's sum and refining (``conv3x3 + BN + ReLU``); the last ``conv3x3`` gives ``num_classes``
  logits at 1/4 resolution, bilinearly upsampled to the input size.

``kernel_sizes=()`` gives MSNet (MICCAI 2021): plain ``|A - B|`` units, otherwise identical.

Parameters, official structure (3 input channels, 1 class): 27,692,585 (backbone 23,669,352
without its unused 2,049,000-parameter classifier, head 4,023,233). The methods catalogue's
27.67 M (29.72 M with the classifier) was counted on the seed re-implementation, which swaps the
deep stem for a single 7x7 convolution at 1 input channel (-25,504) and makes ``CNN1`` a learnable
depthwise convolution (+2,304): 27,669,385. With 1 input channel and 10 classes (Duke):
27,692,585 - 576 + 9 x 577 = 27,697,202. Checked by ``tests/models/test_m2snet.py``.

Deviations from the official code (all documented in ``docs/models.md``):

* **Multi-class** logits ``[B, K, H, W]`` (upstream: one sigmoid channel); the loss is the
  structure loss generalised to softmax classes (:mod:`octseg.losses.structure`).
* **No ImageNet weights by default** (upstream: pretrained Res2Net, downloaded).
  ``pretrained_path`` loads backbone weights from a local file (timm ``res2net50d`` or the
  official ``res2net50_v1b_26w_4s`` state dict; ``fc.*`` is dropped). Nothing is downloaded.
* **1-channel input**: the stem's first convolution takes ``in_channels`` (the deep stem is kept,
  unlike the seed's 7x7 swap); when loading RGB weights its kernels are summed over the colour
  axis (a grey image replicated to RGB gives the same response), and for other channel counts
  repeated cyclically and scaled by ``3 / in_channels``.
* Any ``H x W`` via :class:`~octseg.models.wrappers.PadToDivisor` (multiples of 32, reflect
  padding) instead of upstream's resizing of every image to 224-352 px squares.
* ``F.interpolate(..., align_corners=False)`` where upstream calls the deprecated ``F.upsample``
  (the same operation). The all-ones filter sums channels first, then box-filters one map: equal
  to upstream's dense ``C x C x k x k`` all-ones convolution (tested), at 1/C of its cost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from octseg.utils.checkpoint_io import load_state_dict_strict, read_weights_file

__all__ = ["AllOnesFilter", "M2SNet", "conv_bn_relu", "load_backbone_weights"]

log = logging.getLogger(__name__)

BACKBONE = "res2net50d"  # timm's Res2Net-50 v1b (26w x 4s, deep stem, average-pool shortcuts)
STAGE_CHANNELS = (64, 256, 512, 1024, 2048)  # stem (after max-pool), layer1..layer4
WIDTH = 64


def conv_bn_relu(in_channels: int, out_channels: int = WIDTH) -> nn.Sequential:
    """``conv3x3 (with bias) -> BN -> ReLU``, the unit every M2SNet head layer uses."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class AllOnesFilter(nn.Module):
    """Fixed all-ones ``k x k`` convolution over all channels, then BatchNorm and ReLU (the
    official ``CNN1``; its kernel is ``ones(C, C, k, k)`` and never trained).

    Every output channel of the all-ones convolution is the same ``k x k`` box sum of the
    channel sum (zero padding), so it is computed as such: a ``[1, 1, k, k]`` ones buffer on the
    channel sum, broadcast to ``C`` channels, which the per-channel BatchNorm then tells apart.

    Args:
        channels: input = output channels.
        kernel_size: odd window size (3 and 5 in M2SNet).

    Raises:
        ValueError: if ``kernel_size`` is not a positive odd number.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"AllOnesFilter needs an odd kernel size (model.net.kernel_sizes), got "
                f"{kernel_size}."
            )
        self.channels = channels
        self.kernel_size = kernel_size
        # A constant of the architecture: not trained, not saved.
        self.register_buffer("ones", torch.ones(1, 1, kernel_size, kernel_size), persistent=False)
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)

    def box_sum(self, x: torch.Tensor) -> torch.Tensor:
        """The all-ones convolution alone: ``[B, C, H, W] -> [B, C, H, W]``."""
        total = x.sum(dim=1, keepdim=True)
        summed = F.conv2d(total, self.ones.to(total.dtype), padding=self.kernel_size // 2)
        return summed.expand(-1, self.channels, -1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm needs its own memory for the broadcast map (per-channel statistics).
        return self.act(self.norm(self.box_sum(x).contiguous()))


def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB stem kernels ``[O, 3, k, k]`` for ``in_channels`` inputs (see the module docstring)."""
    if weight.shape[1] == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def load_backbone_weights(backbone: nn.Module, path: str | Path, in_channels: int) -> None:
    """Loads Res2Net-50 v1b weights from a local file into ``backbone`` (in place).

    Accepts a plain state dict or one under ``"state_dict"``/``"model"``, with or without a
    ``"module."``/``"resnet."`` prefix (DataParallel, a saved M2SNet); the classifier (``fc.*``)
    is dropped and the first stem convolution adapted to ``in_channels``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file's keys or shapes do not fit the backbone.
    """
    setting = "model.net.pretrained_path"
    hint = (
        "give a local Res2Net-50 v1b state dict (e.g. timm res2net50d or res2net50_v1b_26w_4s) "
        "or set it to null."
    )
    state = read_weights_file(path, setting, hint)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    cleaned: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        for prefix in ("module.", "resnet."):
            name = name.removeprefix(prefix)
        if not name.startswith("fc."):
            cleaned[name] = value
    if "conv1.0.weight" in cleaned:
        cleaned["conv1.0.weight"] = _adapt_first_conv(cleaned["conv1.0.weight"], in_channels)
    expected = "Res2Net-50 v1b (26w x 4s) weights that fit the backbone"
    load_state_dict_strict(backbone, cleaned, setting, path, expected)
    log.info("Loaded Res2Net-50 v1b backbone weights from %s", path)


class M2SNet(nn.Module):
    """M2SNet (MSNet with ``kernel_sizes=()``) on a Res2Net-50 v1b encoder.

    Args:
        in_channels: input channels (1 for OCT).
        num_classes: output classes ``K``.
        kernel_sizes: sizes of the fixed all-ones filters of the intra-layer multi-scale
            subtraction (M2SNet: ``(3, 5)``; ``()`` = MSNet).
        pretrained_path: optional local file with Res2Net-50 v1b weights for the encoder
            (:func:`load_backbone_weights`); None = random initialisation (nothing downloaded).

    Shapes:
        ``forward(x [B, C, H, W]) -> logits [B, K, H, W]`` (raw; H and W multiples of 32, which
        :class:`~octseg.models.wrappers.PadToDivisor` ensures).
    """

    size_divisor = 32
    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        kernel_sizes: Sequence[int] = (3, 5),
        pretrained_path: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.resnet = timm.create_model(
            BACKBONE, pretrained=False, num_classes=0, in_chans=in_channels
        )
        # The classifier is unused (upstream keeps it, 2.05 M parameters; timm: Identity).
        if pretrained_path:
            load_backbone_weights(self.resnet, pretrained_path, in_channels)
        self.filters = nn.ModuleList(AllOnesFilter(WIDTH, int(k)) for k in kernel_sizes)
        levels = len(STAGE_CHANNELS)
        self.reduce = nn.ModuleList(conv_bn_relu(c) for c in STAGE_CHANNELS[1:])
        # units[n][i]: level n+1 of the pyramid, subtracting its inputs i+1 (upsampled) and i.
        self.units = nn.ModuleList(
            nn.ModuleList(conv_bn_relu(WIDTH) for _ in range(levels - 1 - n))
            for n in range(levels - 1)
        )
        self.top_refine = conv_bn_relu(WIDTH)
        self.scale_refine = nn.ModuleList(conv_bn_relu(WIDTH) for _ in range(levels - 2))
        self.top_reduce = conv_bn_relu(STAGE_CHANNELS[-1])
        self.decoder = nn.ModuleList(conv_bn_relu(WIDTH) for _ in range(levels - 2))
        self.head = nn.Conv2d(WIDTH, num_classes, kernel_size=3, padding=1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features, finest first: stem (1/4), layer1 (1/4) .. layer4 (1/32)."""
        r = self.resnet
        feats = [r.maxpool(r.act1(r.bn1(r.conv1(x))))]
        for stage in (r.layer1, r.layer2, r.layer3, r.layer4):
            feats.append(stage(feats[-1]))
        return feats

    def subtract(self, coarse: torch.Tensor, fine: torch.Tensor, unit: nn.Module) -> torch.Tensor:
        """Multi-scale subtraction unit: ``unit(|A - B| + sum_k |F_k(A) - F_k(B)|)`` with ``A``
        the coarser map upsampled to ``B``'s size."""
        coarse = _upsample(coarse, fine)
        diff = (coarse - fine).abs()
        for f in self.filters:
            diff = diff + (f(coarse) - f(fine)).abs()
        return unit(diff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encode(x)
        rows = [[feats[0], *(r(f) for r, f in zip(self.reduce, feats[1:], strict=True))]]
        for n, units in enumerate(self.units):
            prev = rows[-1]
            coarse = list(prev[1:])
            if n == len(self.units) - 1:
                coarse[0] = self.top_refine(coarse[0])
            rows.append(
                [self.subtract(c, f, u) for c, f, u in zip(coarse, prev[:-1], units, strict=True)]
            )
        pyramid = rows[1:]
        # scale i (finest first) sums every pyramid level that reaches it.
        coarsest = len(pyramid[0]) - 1
        sums = [sum(row[i] for row in pyramid if i < len(row)) for i in range(coarsest + 1)]
        scales = [r(s) for r, s in zip(self.scale_refine, sums[:coarsest], strict=True)]
        scales.append(sums[coarsest])
        out = self.top_reduce(feats[-1])
        for i in range(coarsest, 0, -1):
            out = self.decoder[i - 1](_upsample(out, scales[i]) + scales[i])
        out = self.head(_upsample(out, scales[0]) + scales[0])
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
