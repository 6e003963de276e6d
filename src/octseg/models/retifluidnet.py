"""RetiFluidNet: self-adaptive, multi-attention U-Net for retinal fluid segmentation.

Rasti R., Biglari A., Rezapourian M., Yang Z., Farsiu S., "RetiFluidNet: A Self-Adaptive and
Multi-Attention Deep Convolutional Network for Retinal OCT Fluid Segmentation", IEEE Trans. Med.
Imaging 42(5):1413-1423, 2023 (early access 2022), doi:10.1109/TMI.2022.3228285. Official code
(TensorFlow/Keras): ``aidialab/RetiFluidNet`` (``model.py``, ``losses.py``); read, not copied.

Structure (as the official ``RetiFluidNet_model``):

* encoder: five blocks of ``(conv3x3 + bias -> BN -> ReLU) x 2`` with 32, 64, 128, 256, 512
  filters, each followed by a 2x2 max-pooling;
* centre: self-adaptive dual attention (:class:`SelfAdaptiveDualAttention`, SDA) on the pooled
  fifth block, a 1024-filter conv block, then the RMP block
  (:class:`~octseg.models.blocks.pyramid.ResidualMultiKernelPooling`, kernels 2, 3, 5, 6:
  1028 channels);
* decoder: five blocks of a 2x2 stride-2 transposed convolution, concatenation
  ``[SDA(skip), skip, up]``, BN, ReLU and two conv blocks with the skip's filters;
* heads: the main ``1x1`` classifier on the last decoder block, side classifiers on decoder
  blocks 1..4 (nearest-upsampled x2..x16 to the input size), and per scale and class a
  bi-directional connectivity head: a ``1x1`` convolution from that class's map to 8 channels
  (one per neighbour), i.e. ``8 K`` maps at each of the 5 scales. As upstream, scale 0 reads the
  main logits and scales 1..4 the softmax of their side outputs.

Outputs (:class:`~octseg.models.base.SegOutput`): ``logits`` = the main head (raw);
``aux["deep_supervision"]`` = side logits of decoders 1..4 (finest first) at the input size;
``aux["connectivity"]`` = connectivity logits ``[B, K, 8, H, W]`` of scales 0..4 (the sigmoid
is applied by the loss, :mod:`octseg.losses.connectivity`). Neighbour order: row-major over the
3 x 3 window without its centre (NW, N, NE, W, E, SW, S, SE), as upstream
(:data:`octseg.losses.connectivity.NEIGHBOURS`).

Deviations from the official code (none changes the parameter count):

* Every layer is built once in ``__init__`` and trained (the PyTorch seed built its layers in
  ``forward``, so nothing trained: methods.md §3.14).
* Raw logits out; the softmax of the main and side outputs and the sigmoid of the connectivity
  maps move to the loss. Side classifiers run before the nearest upsampling (identical
  result for a ``1x1`` convolution, 4-256x cheaper); so do the side connectivity heads.
* Any input size: ``PadToDivisor`` pads to multiples of 32 and at least 192 x 192 (the centre
  map must keep a 6 x 6 RMP pooling cell). The official code takes 256 x 256 only.
* Resizing back after SDA and RMP pooling uses half-pixel nearest (``nearest-exact``, TF2's
  ``Resizing(interpolation="nearest")``); on multiples of the pooling size it is a plain repeat.
* The pixel attention runs through ``scaled_dot_product_attention`` (same maths, memory linear in
  the number of pooled positions: a Duke B-scan has 16,000+ at the first level).
* Prediction (label map, metrics) comes from the main head; the official validation Dice scores
  the map voted from the scale-0 connectivity heads instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from octseg.models.base import SegOutput
from octseg.models.blocks.conv import DoubleConv
from octseg.models.blocks.pyramid import ResidualMultiKernelPooling

__all__ = ["RetiFluidNet", "SelfAdaptiveDualAttention"]


class SelfAdaptiveDualAttention(nn.Module):
    """SDA: pixel-wise and channel-wise self-attention on a max-pooled copy of the input, each
    scaled by a learnable scalar gate with ReLU, resized back, averaged and added to the input.

    With ``t = maxpool_p(x)`` flattened to ``[N, C]`` (``N = H_p W_p``):
    pixel ``= softmax(t t^T / sqrt(N)) t``, channel ``= t softmax(t^T t / C)`` (softmax over the
    last axis), ``out = x + (up(relu(alpha pixel)) + up(relu(beta channel))) / 2``. The gates
    ``alpha`` and ``beta`` are upstream's ``1x1`` convolutions with one filter, no bias, ones
    initialisation and ReLU on a ``[N, C, 1]`` map: one scalar each.

    Args:
        pool: max-pooling size ``p`` (4 everywhere upstream).
    """

    def __init__(self, pool: int = 4) -> None:
        super().__init__()
        self.pool = int(pool)
        self.alpha = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if min(h, w) < self.pool:
            raise ValueError(
                f"SelfAdaptiveDualAttention pools by {self.pool} but got a {h} x {w} map; the "
                "network's min_hw must keep every SDA input at least that large."
            )
        pooled = F.max_pool2d(x, self.pool)
        hp, wp = pooled.shape[-2:]
        # Contiguous, or SDPA falls back to its math kernel (an N x N matrix in memory).
        tokens = pooled.flatten(2).transpose(1, 2).contiguous()  # [B, N, C], row-major
        pixel = F.scaled_dot_product_attention(
            tokens[:, None], tokens[:, None], tokens[:, None], scale=1.0 / math.sqrt(hp * wp)
        )[:, 0]
        weights = torch.softmax(tokens.transpose(1, 2) @ tokens / c, dim=-1)  # [B, C, C]
        channel = tokens @ weights
        fused = 0.5 * (F.relu(self.alpha * pixel) + F.relu(self.beta * channel))
        fused = fused.transpose(1, 2).reshape(b, c, hp, wp)
        return x + F.interpolate(fused, size=(h, w), mode="nearest-exact")


class _DecoderBlock(nn.Module):
    """Transposed convolution, ``[SDA(skip), skip, up]``, BN, ReLU, two conv blocks."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.attention = SelfAdaptiveDualAttention()
        merged = 2 * skip_channels + out_channels
        self.fuse = nn.Sequential(
            nn.BatchNorm2d(merged),
            nn.ReLU(inplace=True),
            DoubleConv(merged, out_channels, bias=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        merged = torch.cat((self.attention(skip), skip, self.up(x)), dim=1)
        return self.fuse(merged)


class _ConnectivityHead(nn.Module):
    """Per class, a ``1x1`` convolution from that class's map to 8 neighbour channels (a
    grouped convolution: the same ``16 K`` parameters as upstream's K separate layers)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(num_classes, 8 * num_classes, kernel_size=1, groups=num_classes)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        out = self.conv(maps)
        return out.view(out.shape[0], self.num_classes, 8, *out.shape[-2:])


class RetiFluidNet(nn.Module):
    """RetiFluidNet (Rasti et al., IEEE TMI 2023), see the module docstring.

    Args:
        in_channels: input channels (1 for OCT).
        num_classes: classes including background (upstream: 4, background/IRF/SRF/PED).
        base_channels: filters of the first block, doubled per level (upstream 32).

    Shapes:
        ``forward(x [B, in_channels, H, W]) -> SegOutput`` with ``logits [B, K, H, W]``; H and W
        multiples of 32 and at least 192 (``PadToDivisor`` takes care of both).
    """

    size_divisor = 32
    requires_square = False
    # The centre (H/32) must hold the RMP block's 6 x 6 pooling.
    min_hw = (192, 192)

    def __init__(
        self, in_channels: int = 1, num_classes: int = 4, base_channels: int = 32
    ) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(5)]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(DoubleConv(previous, width, bias=True))
            previous = width
        centre = 2 * widths[-1]
        self.centre_attention = SelfAdaptiveDualAttention()
        self.centre = DoubleConv(widths[-1], centre, bias=True)
        self.rmp = ResidualMultiKernelPooling(centre)
        previous = centre + len(self.rmp.kernels)
        decoders = []
        for width in reversed(widths):
            decoders.append(_DecoderBlock(previous, width, width))
            previous = width
        # Finest first: decoders[0] works at the input size, decoders[4] at 1/16.
        self.decoders = nn.ModuleList(reversed(decoders))
        self.main_head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        self.side_heads = nn.ModuleList(
            nn.Conv2d(w, num_classes, kernel_size=1) for w in widths[1:]
        )
        self.connectivity_heads = nn.ModuleList(_ConnectivityHead(num_classes) for _ in widths)

    def forward(self, x: torch.Tensor) -> SegOutput:
        size = x.shape[-2:]
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.rmp(self.centre(self.centre_attention(x)))
        features = []
        for decoder, skip in zip(reversed(self.decoders), reversed(skips), strict=True):
            x = decoder(x, skip)
            features.append(x)
        features.reverse()  # finest first, as self.decoders
        logits = self.main_head(features[0])
        sides, connectivity = [], [self.connectivity_heads[0](logits)]
        for level, head in enumerate(self.side_heads, start=1):
            side = head(features[level])
            conn = self.connectivity_heads[level](side.softmax(dim=1))
            sides.append(F.interpolate(side, size=size, mode="nearest"))
            conn = F.interpolate(conn.flatten(1, 2), size=size, mode="nearest")
            connectivity.append(conn.view(*conn.shape[:1], -1, 8, *size))
        return SegOutput(
            logits=logits, aux={"deep_supervision": sides, "connectivity": connectivity}
        )
