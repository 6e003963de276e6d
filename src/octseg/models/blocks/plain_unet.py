"""Plain U-Net pieces without normalisation, in the layout of the Gunduz-Demir lab's Keras code.

Used by FourierNet (:mod:`octseg.models.fouriernet`); any method built on the same Keras U-Net
(``conv3x3 -> ReLU -> Dropout -> conv3x3 -> ReLU``, max-pooling, nearest upsampling,
``[upsampled, skip]`` concatenation, Keras initialisation) can share them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from octseg.models.blocks.init import init_weights

__all__ = ["PlainUNetBlock", "PlainUNetEncoder", "PlainUNetDecoder"]


class PlainUNetBlock(nn.Sequential):
    """``conv3x3 -> ReLU -> Dropout -> conv3x3 -> ReLU`` with biases and no normalisation.

    Weights are He-uniform (Keras ``he_uniform``: uniform with bound ``sqrt(6 / fan_in)``),
    biases zero, as the Keras code initialises them.

    Args:
        in_channels: input channels.
        out_channels: output channels of both convolutions.
        dropout: dropout rate between the two convolutions.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.2) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        init_weights(self, "he_uniform")


class PlainUNetEncoder(nn.Module):
    """Encoder and bottleneck: ``len(features) - 1`` blocks with max-pooling, then a block.

    Args:
        in_channels: input channels.
        features: block widths, finest first; the last one is the bottleneck's.
        dropout: dropout rate inside the blocks.
    """

    def __init__(self, in_channels: int, features: Sequence[int], dropout: float) -> None:
        super().__init__()
        ins = [in_channels, *features[:-2]]
        self.blocks = nn.ModuleList(
            [PlainUNetBlock(i, o, dropout) for i, o in zip(ins, features[:-1], strict=False)]
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = PlainUNetBlock(features[-2], features[-1], dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the bottleneck features and the skips (finest first)."""
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        return self.bottleneck(x), skips


class PlainUNetDecoder(nn.Module):
    """Decoder: per level, nearest 2x upsampling, ``cat([up, skip])``, a block, then a 1x1 head.

    Args:
        features: block widths of the encoder, finest first (bottleneck last).
        out_channels: channels of the 1x1 head.
        dropout: dropout rate inside the blocks.
    """

    def __init__(self, features: Sequence[int], out_channels: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        # blocks[i] makes level i from level i + 1 (features[i + 1] channels) and skip i.
        self.blocks = nn.ModuleList(
            [
                PlainUNetBlock(features[i + 1] + features[i], features[i], dropout)
                for i in range(len(features) - 1)
            ]
        )
        self.head = nn.Conv2d(features[0], out_channels, kernel_size=1)
        # The Keras heads keep Keras' defaults: Glorot-uniform weights, zero bias.
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        for level in reversed(range(len(self.blocks))):
            x = self.blocks[level](torch.cat((self.up(x), skips[level]), dim=1))
        return self.head(x)
