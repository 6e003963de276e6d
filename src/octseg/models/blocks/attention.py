"""Attention U-Net pieces: the additive attention gate (Oktay et al., "Attention U-Net:
Learning where to look for the pancreas", MIDL 2018, arXiv:1804.03999) and the residual
convolution block and upsampling stage of the SD-LayerNet attention U-Net (Fazekas et al.,
MICCAI 2022), usable by any U-Net-style network.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AttentionGate", "ResidualConvBlock", "UpConvBNAct"]


class AttentionGate(nn.Module):
    """Additive attention gate: ``x * sigmoid(BN(psi(relu(BN(Wg g) + BN(Wx x)))))``.

    Args:
        gate_channels: channels of the gating signal ``g`` (the coarser decoder features).
        skip_channels: channels of the skip features ``x`` that are rescaled.
        inner_channels: channels of the joint 1x1 projections.
    """

    def __init__(self, gate_channels: int, skip_channels: int, inner_channels: int) -> None:
        super().__init__()
        self.w_gate = nn.Sequential(
            nn.Conv2d(gate_channels, inner_channels, kernel_size=1), nn.BatchNorm2d(inner_channels)
        )
        self.w_skip = nn.Sequential(
            nn.Conv2d(skip_channels, inner_channels, kernel_size=1), nn.BatchNorm2d(inner_channels)
        )
        self.psi = nn.Sequential(
            nn.Conv2d(inner_channels, 1, kernel_size=1), nn.BatchNorm2d(1), nn.Sigmoid()
        )
        self.relu = nn.ReLU()

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``gate [B, Cg, H, W]``, ``skip [B, Cx, H, W]`` -> gated ``skip``."""
        return skip * self.psi(self.relu(self.w_gate(gate) + self.w_skip(skip)))


class ResidualConvBlock(nn.Module):
    """``c = conv(x)``; ``relu(c + BN(conv(drop(relu(BN(conv(c)))))))`` (convolutions with bias,
    ``kernel_size`` square, 'same' padding; SD-LayerNet's U-Net and layer predictor block).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size (3 in the U-Net, 11 in the layer predictor).
        drop_rate: channel dropout after each normalisation (0 in the official config).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.entry = nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad)
        self.body = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, kernel_size, padding=pad),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(drop_rate),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size, padding=pad),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(drop_rate),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        entry = self.entry(x)
        return self.act(self.body(entry) + entry)


class UpConvBNAct(nn.Sequential):
    """Bilinear 2x upsampling (``align_corners=True``), conv3x3, BN, dropout, ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        drop_rate: channel dropout rate.
    """

    def __init__(self, in_channels: int, out_channels: int, drop_rate: float = 0.0) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(drop_rate),
            nn.ReLU(),
        )
