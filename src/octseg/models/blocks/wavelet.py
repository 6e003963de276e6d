"""Discrete wavelet transform with fixed Haar filters, and the wavelet channel attention on it.

The 2-D Haar DWT is computed as one stride-2 grouped convolution with four fixed ``2 x 2`` kernels
held in a (non-persistent) buffer, so it moves with the module between devices and dtypes, has no
parameters and needs no wavelet library (neither ``pywt``, ``ptwt`` nor ``pytorch_wavelets`` is a
dependency of OCTSeg). The filters are orthonormal (``1/2`` per tap in 2-D), so the transform
preserves energy on even-sized maps.

Sub-band names follow WaveCNet's ``DWT_2D`` (the module the WATNet seed imports): the first letter
is the filter along H (rows), the second along W (columns). ``LL`` is the approximation, ``LH``
is low-pass along H and high-pass along W (it responds to changes across columns, i.e. vertical
edges), ``HL`` high-pass along H (horizontal edges, e.g. OCT layer boundaries), ``HH`` diagonal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SUBBANDS", "HaarDWT", "WaveletChannelAttention"]

SUBBANDS = ("LL", "LH", "HL", "HH")


def _haar_kernels() -> torch.Tensor:
    """The four orthonormal 2-D Haar kernels ``[4, 1, 2, 2]`` in :data:`SUBBANDS` order."""
    signs = {"L": torch.tensor([1.0, 1.0]), "H": torch.tensor([1.0, -1.0])}
    # Outer product of the 1-D filters (1, +-1) / sqrt(2): rows (H) filtered by the first letter,
    # columns (W) by the second; the 1/2 is exact in every float dtype.
    return 0.5 * torch.stack([torch.outer(signs[b[0]], signs[b[1]]) for b in SUBBANDS])[:, None]


class HaarDWT(nn.Module):
    """One level of the 2-D orthonormal Haar DWT, channel by channel.

    Odd H or W are first extended by one replicated row/column (a constant map keeps zero detail
    bands).

    Examples::

        >>> bands = HaarDWT()(torch.ones(1, 3, 8, 6))
        >>> bands.shape, float(bands[:, :, 1:].abs().max())
        (torch.Size([1, 3, 4, 4, 3]), 0.0)
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernels", _haar_kernels(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, 4, ceil(H/2), ceil(W/2)]``, bands in :data:`SUBBANDS` order."""
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        weight = self.kernels.to(x.dtype).repeat(c, 1, 1, 1)  # [4C, 1, 2, 2], grouped per channel
        out = F.conv2d(x, weight, stride=2, groups=c)
        return out.reshape(b, c, len(SUBBANDS), *out.shape[-2:])


class WaveletChannelAttention(nn.Module):
    """WATNet's channel attention: an SE block whose descriptor comes from Haar DWT sub-bands.

    The descriptor of each channel is the spatial mean of the sum of the selected sub-bands
    (WATNet: ``LL + LH``), followed by ``FC(C -> C/r) -> ReLU -> FC(C/r -> C) -> sigmoid``; the
    input channels are multiplied by the result.

    Args:
        channels: input (and output) channels.
        reduction: bottleneck ratio ``r`` of the two fully connected layers (WATNet: 2).
        subbands: names from :data:`SUBBANDS` summed into the descriptor.

    Raises:
        ValueError: for an empty or unknown sub-band selection, or a reduction that leaves no
            hidden unit.
    """

    def __init__(
        self, channels: int, reduction: int = 2, subbands: Sequence[str] = ("LL", "LH")
    ) -> None:
        super().__init__()
        names = [str(s).upper() for s in subbands]
        if not names or any(s not in SUBBANDS for s in names):
            raise ValueError(
                f"WaveletChannelAttention subbands must be a non-empty subset of {SUBBANDS}, "
                f"got {list(subbands)}; set model.net.subbands accordingly."
            )
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(
                f"WaveletChannelAttention reduction={reduction} leaves no hidden unit for "
                f"{channels} channels; use a reduction <= {channels}."
            )
        self.subbands = names
        self.register_buffer(
            "band_index", torch.tensor([SUBBANDS.index(s) for s in names]), persistent=False
        )
        self.dwt = HaarDWT()
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel descriptor ``[B, C]``: spatial mean of the summed selected sub-bands."""
        bands = self.dwt(x).index_select(2, self.band_index)
        return bands.sum(dim=2).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``, each channel scaled by its attention weight."""
        scale = self.fc(self.descriptor(x))
        return x * scale[:, :, None, None].to(x.dtype)
