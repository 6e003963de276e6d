"""Convolution blocks of the U-Net family, shared by U-Net and Y-Net (and later variants).

The layout follows the U-Net baseline in the Y-Net code (``azadef/ynet``, Apache-2.0), itself the
widespread ``mateuszbuda/brain-segmentation-pytorch`` U-Net: two ``3x3`` convolutions without
bias, each followed by BatchNorm and ReLU; upsampling by a ``2x2`` stride-2 transposed
convolution whose output is concatenated *before* the skip features.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DoubleConv", "UpConcat"]


class DoubleConv(nn.Sequential):
    """``(conv3x3 -> BN -> ReLU) x 2``, bias-free convolutions (BatchNorm supplies the shift).

    Args:
        in_channels: input channels.
        out_channels: output channels of the second convolution.
        mid_channels: output channels of the first convolution (default ``out_channels``;
            WATNet uses ``out_channels // 2``).
        bias: give the convolutions a bias anyway (Keras' default, kept where an official
            parameter count includes it, e.g. RetiFluidNet).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        bias: bool = False,
    ) -> None:
        mid = mid_channels or out_channels
        super().__init__(
            nn.Conv2d(in_channels, mid, kernel_size=3, padding=1, bias=bias),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, kernel_size=3, padding=1, bias=bias),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpConcat(nn.Module):
    """Decoder stage: ``2x2`` transposed convolution, concatenation with skips, then
    :class:`DoubleConv`.

    Args:
        in_channels: channels of the coarser decoder input.
        up_channels: channels after the transposed convolution.
        skip_channels: total channels of the skip tensors concatenated after the upsampled ones.
        out_channels: output channels.
        mid_channels: inner width of the :class:`DoubleConv` (default ``out_channels``).
    """

    def __init__(
        self,
        in_channels: int,
        up_channels: int,
        skip_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, up_channels, kernel_size=2, stride=2)
        self.block = DoubleConv(up_channels + skip_channels, out_channels, mid_channels)

    def forward(self, x: torch.Tensor, *skips: torch.Tensor) -> torch.Tensor:
        """Upsamples ``x`` 2x, concatenates ``[up(x), *skips]`` on channels, convolves.

        Args:
            x: coarser features ``[B, in_channels, h, w]``.
            *skips: encoder features ``[B, *, 2h, 2w]``.

        Returns:
            ``[B, out_channels, 2h, 2w]``.
        """
        return self.block(torch.cat((self.up(x), *skips), dim=1))
