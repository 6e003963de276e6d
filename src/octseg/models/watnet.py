"""WATNet: a U-Net with wavelet channel attention after every encoder and decoder stage.

Wang C., Gan M., "Wavelet attention network for the segmentation of layer structures on OCT
images", Biomed. Opt. Express 13(12):6167-6181, 2022, doi:10.1364/BOE.475272. No official code
was found; this file is written from the paper's description (as summarised in OCTSeg's methods
catalogue, ``shared/docs/methods.md`` §3.9) and a reading of the seed re-implementation
(``ZhangHH233/Retinal_OCT_Image_Segmentation_via_Deep_Learning``, ``WAT_SegNet_2022.py``), whose
structure it follows.

Structure (``base_channels`` f = 64): five encoder stages ``(conv3x3-BN-ReLU) x 2`` with inner
width ``out / 2`` (f, 2f, 4f, 8f, 16f) separated by 2x2 max-pooling, a ``16f`` middle block, four
decoder stages (2x2 transposed convolution to half the channels, concatenation with the skip,
the same double convolution) and a 1x1 head. A :class:`WaveletChannelAttention` (Haar DWT,
descriptor = spatial mean of ``LL + LH``, ``FC(C -> C/2) -> ReLU -> FC -> sigmoid``) rescales
the channels after each of the four upper encoder stages and each decoder stage.

Parameters at 1 input channel and 4 classes: 27,053,988 with one attention module per stage
(default), 26,704,388 with ``share_attention=True``, the seed's structure (26,704,964 with its
default 3 input channels: the 26.70 M of the catalogue). 27,054,378 at 10 classes (Duke).

Deviations from the seed re-implementation (and where the paper is not followed literally):

* **Attention modules per stage.** The seed reuses the encoder's attention instance (same
  weights) after the decoder stage of equal width, which looks unintended; here every stage has
  its own module (+349,600 parameters). ``share_attention=True`` restores the sharing.
* **DWT.** The seed calls WaveCNet's ``DWT_2D`` (absent from its repository, and called without
  the wavelet name it requires). Here a fixed orthonormal Haar DWT (registered buffer, no
  dependency) replaces it; other bases of the paper's study (e.g. Daubechies) are not offered.
  Sub-bands are configurable (``subbands``; default the seed's ``LL + LH``).
* **Concatenation order** in the decoder: upsampled features before the skip (the seed: skip
  first); for a freshly initialised network this is only a permutation of input channels.
* Raw logits, ``in_channels``/``num_classes`` named as in OCTSeg, no ``.cuda()`` calls.

Input: multiples of 16 (four poolings); any B-scan through
:class:`~octseg.models.wrappers.PadToDivisor`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from octseg.models.blocks.conv import DoubleConv, UpConcat
from octseg.models.blocks.wavelet import WaveletChannelAttention

__all__ = ["WATNet"]


class WATNet(nn.Module):
    """U-Net with Haar-wavelet channel attention (Wang & Gan, BOE 2022).

    Args:
        in_channels: image channels (1 for OCT).
        num_classes: output classes, background included.
        base_channels: width ``f`` of the first stage (paper/seed: 64).
        subbands: DWT sub-bands summed into the attention descriptor (``LL``, ``LH``, ``HL``,
            ``HH``; seed: ``LL`` and ``LH``).
        reduction: ratio of the attention's hidden layer (seed: 2).
        share_attention: reuse each encoder stage's attention after the decoder stage of the same
            width (the seed's behaviour) instead of one module per stage.

    Examples::

        >>> net = WATNet(in_channels=1, num_classes=4, base_channels=8)
        >>> net(torch.zeros(2, 1, 32, 48)).shape
        torch.Size([2, 4, 32, 48])
    """

    size_divisor = 16
    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        base_channels: int = 64,
        subbands: Sequence[str] = ("LL", "LH"),
        reduction: int = 2,
        share_attention: bool = False,
    ) -> None:
        super().__init__()
        f = [base_channels * 2**i for i in range(5)]
        ins = [in_channels] + f[:4]
        self.encoders = nn.ModuleList(
            [DoubleConv(i, o, o // 2) for i, o in zip(ins, f, strict=False)]
        )
        self.middle = DoubleConv(f[4], f[4], f[4] // 2)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.enc_attention = nn.ModuleList(
            [WaveletChannelAttention(c, reduction, subbands) for c in f[:4]]
        )
        self.dec_attention = (
            self.enc_attention
            if share_attention
            else nn.ModuleList([WaveletChannelAttention(c, reduction, subbands) for c in f[:4]])
        )
        self.share_attention = share_attention
        # decoders[k] produces stage k from stage k + 1 and the stage-k skip.
        self.decoders = nn.ModuleList(
            [UpConcat(f[k + 1], f[k], f[k], f[k], f[k] // 2) for k in range(4)]
        )
        self.head = nn.Conv2d(f[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, K, H, W)`` raw logits; H and W multiples of 16."""
        skips = []
        for k in range(4):
            x = self.enc_attention[k](self.encoders[k](x))
            skips.append(x)
            x = self.pool(x)
        y = self.middle(self.encoders[4](x))
        for k in reversed(range(4)):
            y = self.dec_attention[k](self.decoders[k](y, skips[k]))
        return self.head(y)
