"""ResUNet++ building blocks (Jha et al., "ResUNet++: An Advanced Architecture for Medical Image
Segmentation", IEEE ISM 2019, arXiv:1911.07067), in the layout of ISLAM 2024's official network
(``niazoys/RLS_PSDF``, ``model/unet_plusplus_sdm_*.py``; read, not copied).

* :class:`SqueezeExcitation`: global average pool, two bias-free linear layers (reduction 8),
  sigmoid gate.
* :class:`StemBlock`: ``conv3x3(stride) -> BN -> ReLU -> conv3x3`` plus a ``conv1x1(stride) -> BN``
  shortcut, then squeeze-excitation of the sum.
* :class:`ResidualSEBlock`: the pre-activation version (``BN -> ReLU -> conv`` twice) with the
  same shortcut and gate; strided for the encoder.
* :class:`ASPP`: four dilated ``3x3`` convolutions (rates 1, 6, 12, 18) with BN, *summed*, then a
  ``1x1`` convolution.
* :class:`AttentionGate`: the skip (``g``) goes ``BN -> ReLU -> conv3x3 -> maxpool 2``, the deeper
  features (``x``) ``BN -> ReLU -> conv3x3``; their sum ``BN -> ReLU -> conv3x3`` multiplies ``x``.
* :class:`AttentionDecoderBlock`: attention gate, nearest x2 upsampling, concatenation with the
  skip, residual block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "ASPP",
    "AttentionDecoderBlock",
    "AttentionGate",
    "ResidualSEBlock",
    "SqueezeExcitation",
    "StemBlock",
]


class SqueezeExcitation(nn.Module):
    """Channel gate ``x * sigmoid(W2 relu(W1 avgpool(x)))``.

    Args:
        channels: feature channels.
        reduction: channel reduction of the hidden layer (at least one hidden unit).
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride),
        nn.BatchNorm2d(out_channels),
    )


class ResidualSEBlock(nn.Module):
    """Pre-activation residual block with a projection shortcut and squeeze-excitation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution and the shortcut (2 in the encoder).
        pre_activation: start with batch norm and ReLU (False: the stem, on raw input).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, pre_activation: bool = True
    ) -> None:
        super().__init__()
        pre = [nn.BatchNorm2d(in_channels), nn.ReLU()] if pre_activation else []
        self.body = nn.Sequential(
            *pre,
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.se = SqueezeExcitation(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.body(x) + self.shortcut(x))


class StemBlock(ResidualSEBlock):
    """The first residual block (post-activation inside, no activation on the input).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution and the shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride, pre_activation=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with summed branches.

    Args:
        in_channels: input channels.
        out_channels: output channels (every branch and the final ``1x1`` convolution).
        rates: dilation rates of the four ``3x3`` branches.
    """

    def __init__(
        self, in_channels: int, out_channels: int, rates: Sequence[int] = (1, 6, 12, 18)
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=r, dilation=r),
                nn.BatchNorm2d(out_channels),
            )
            for r in rates
        )
        self.project = nn.Conv2d(out_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.branches[0](x)
        for branch in self.branches[1:]:
            total = total + branch(x)
        return self.project(total)


class AttentionGate(nn.Module):
    """ResUNet++ attention: the finer skip ``g`` gates the coarser features ``x``.

    Args:
        skip_channels: channels of ``g`` (twice the spatial size of ``x``).
        channels: channels of ``x`` (and of the output).
    """

    def __init__(self, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.g_conv = nn.Sequential(
            nn.BatchNorm2d(skip_channels),
            nn.ReLU(),
            nn.Conv2d(skip_channels, channels, kernel_size=3, padding=1),
            nn.MaxPool2d(2),
        )
        self.x_conv = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )
        self.gc_conv = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.gc_conv(self.g_conv(g) + self.x_conv(x)) * x


class AttentionDecoderBlock(nn.Module):
    """Attention gate, nearest x2 upsampling, concat with the skip, residual block.

    Args:
        skip_channels: channels of the skip features (the finer level).
        channels: channels of the coarser input.
        out_channels: output channels.
    """

    def __init__(self, skip_channels: int, channels: int, out_channels: int) -> None:
        super().__init__()
        self.attention = AttentionGate(skip_channels, channels)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.block = ResidualSEBlock(skip_channels + channels, out_channels)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gated = self.up(self.attention(skip, x))
        return self.block(torch.cat([gated, skip], dim=1))
