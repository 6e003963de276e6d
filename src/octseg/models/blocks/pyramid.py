"""Multi-kernel pooling pyramids that add context channels to a feature map.

:class:`ResidualMultiKernelPooling` is the RMP block of CE-Net (Gu et al., "CE-Net: Context
Encoder Network for 2D Medical Image Segmentation", IEEE TMI 38(10):2281, 2019,
doi:10.1109/TMI.2019.2903562), as used at the centre of RetiFluidNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualMultiKernelPooling"]


class ResidualMultiKernelPooling(nn.Module):
    """Max-pools the input with several kernels (stride = kernel), maps each pooled map to one
    channel (``1x1`` convolution with bias, ReLU), resizes it back (nearest) and concatenates
    ``[x, map_1, ..., map_n]``.

    Args:
        channels: input channels.
        kernels: pooling kernel sizes (CE-Net and RetiFluidNet: 2, 3, 5, 6).

    Shapes:
        ``[B, C, H, W] -> [B, C + len(kernels), H, W]``; H and W must be at least
        ``max(kernels)`` (:attr:`min_size`).
    """

    def __init__(self, channels: int, kernels: Sequence[int] = (2, 3, 5, 6)) -> None:
        super().__init__()
        self.kernels = tuple(int(k) for k in kernels)
        self.convs = nn.ModuleList(nn.Conv2d(channels, 1, kernel_size=1) for _ in self.kernels)

    @property
    def min_size(self) -> int:
        """Smallest H and W the block accepts (every pooling keeps at least one cell)."""
        return max(self.kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"ResidualMultiKernelPooling needs maps of at least {self.min_size} x "
                f"{self.min_size}, got {tuple(x.shape[-2:])}; the network's min_hw must keep "
                "its centre at least this large."
            )
        maps = [x]
        for kernel, conv in zip(self.kernels, self.convs, strict=True):
            pooled = F.relu(conv(F.max_pool2d(x, kernel, kernel)))
            maps.append(F.interpolate(pooled, size=x.shape[-2:], mode="nearest-exact"))
        return torch.cat(maps, dim=1)
