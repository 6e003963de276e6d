"""U-Net baseline as shipped with the Y-Net code.

Ronneberger O., Fischer P., Brox T., "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, arXiv:1505.04597. The configuration is the ``UNet`` class of the
official Y-Net repository (``azadef/ynet``, ``networks.py``, Apache-2.0), which Farshad et al.
(MICCAI 2022) report as their U-Net baseline: four 2x2 max-poolings, 32-64-128-256 encoder
features and a 512-channel bottleneck, ``(conv3x3 -> BN -> ReLU) x 2`` blocks without conv
bias, 2x2 transposed-convolution upsampling, a 1x1 classifier. 7,762,729 parameters at 1 input
channel and 9 classes, as in the official code (checked by ``tests/models/test_param_counts.py``).

Deviations from the official code:

* returns raw logits; the official ``Softmax2d`` output (then fed to a cross-entropy that applies
  softmax again) is dropped, losses apply softmax themselves;
* ``in_channels`` and ``num_classes`` are named as in the rest of OCTSeg.

Input: any ``H x W`` through :class:`~octseg.models.wrappers.PadToDivisor` (the net itself needs
multiples of 16).
"""

from __future__ import annotations

import torch
from torch import nn

from octseg.models.blocks.conv import DoubleConv, UpConcat

__all__ = ["UNet"]


class UNet(nn.Module):
    """Four-level U-Net of the Y-Net code base.

    Args:
        in_channels: image channels (1 for OCT).
        num_classes: output classes, background included.
        base_channels: channels of the first level; level ``i`` has ``base_channels * 2**i``.
        depth: number of 2x2 max-poolings (4 in the Y-Net code; BioNet's U-Nets use 3); the
            input must be a multiple of ``2**depth`` (``size_divisor``).

    Examples::

        >>> net = UNet(in_channels=1, num_classes=9)
        >>> net(torch.zeros(2, 1, 64, 96)).shape
        torch.Size([2, 9, 64, 96])
    """

    size_divisor = 16
    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        base_channels: int = 32,
        depth: int = 4,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"UNet depth must be at least 1 (max-poolings), got {depth}.")
        self.size_divisor = 2**depth
        f = [base_channels * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList(
            [DoubleConv(in_channels, f[0])]
            + [DoubleConv(f[i], f[i + 1]) for i in range(depth - 1)]
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = DoubleConv(f[depth - 1], f[depth])
        # decoders[i] produces level i from level i + 1 and the level-i skip.
        self.decoders = nn.ModuleList([UpConcat(f[i + 1], f[i], f[i], f[i]) for i in range(depth)])
        self.head = nn.Conv2d(f[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, K, H, W)`` raw logits; H and W multiples of ``2**depth``."""
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for level in reversed(range(len(self.decoders))):
            x = self.decoders[level](x, skips[level])
        return self.head(x)
