"""Provisional standard U-Net (Ronneberger et al., MICCAI 2015); replaced by the Y-Net-code
baseline in the models wave."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet"]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with four poolings. ``(B, C_in, H, W) -> (B, K, H, W)`` raw logits."""

    size_divisor = 16
    requires_square = False

    def __init__(self, in_channels: int = 1, num_classes: int = 10, base_channels: int = 32) -> None:
        super().__init__()
        c = [base_channels * 2**i for i in range(5)]
        self.encoders = nn.ModuleList(
            [_double_conv(in_channels, c[0])] + [_double_conv(c[i], c[i + 1]) for i in range(4)]
        )
        self.ups = nn.ModuleList([nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2) for i in range(4)])
        self.decoders = nn.ModuleList([_double_conv(2 * c[i], c[i]) for i in range(4)])
        self.head = nn.Conv2d(c[0], num_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(4)):
            x = self.decoders[i](torch.cat([skips[i], self.ups[i](x)], dim=1))
        return self.head(x)
