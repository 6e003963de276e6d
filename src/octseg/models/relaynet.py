"""ReLayNet: encoder-decoder with max-unpooling for retinal layer and fluid segmentation.

Roy A.G., Conjeti S., Karri S.P.K., Sheet D., Katouzian A., Wachinger C., Navab N., "ReLayNet:
retinal layer and fluid segmentation of macular optical coherence tomography using fully
convolutional networks", Biomed. Opt. Express 8(8):3627-3642, 2017, arXiv:1704.02161.
Official code: ``ai-med/ReLayNet`` (MatConvNet) and ``ai-med/relaynet_pytorch`` (PyTorch, MIT).

Structure: three encoder blocks ``conv 7x3 (64) -> BN -> PReLU -> max-pool 2x2`` (the pooling
indices are kept), a bottleneck ``conv 7x3 -> BN -> PReLU``, three decoder blocks ``max-unpool
with the stored indices -> concat with the pre-pool encoder output (128 channels) -> conv 7x3
-> BN -> PReLU``, and a 1x1 classifier. Kernels are 7 rows (axial) by 3 columns (lateral), with
``(3, 1)`` padding. 777,489 parameters for 1 input channel and 10 classes, the count of the
official PyTorch structure (``tests/models/test_param_counts.py``).

Deviations from the official code:

* raw logits. The MatConvNet release ends in a softmax layer feeding its losses. The released
  PyTorch ``ClassifierBlock`` also returns logits: its ``Softmax2d`` is built but no longer
  applied since the June 2018 "Bug Fixes" commit (before it, the softmax output went to
  ``NLLLoss``, which expects log-probabilities);
* PReLU as in the PyTorch release (one shared slope per block); the MatConvNet release and the
  paper's figure use ReLU, available as ``activation="relu"`` (7 parameters fewer);
* the paper's loss lives in :class:`octseg.losses.relaynet.ReLayNetLoss`.

Input: H and W multiples of 8 (max-unpooling needs the exact pre-pool size);
:class:`~octseg.models.wrappers.PadToDivisor` pads any B-scan. The paper trains on 64-column
slabs of the full-height B-scan and predicts full B-scans.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ReLayNet"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"prelu": nn.PReLU, "relu": nn.ReLU}


class _ConvBNAct(nn.Sequential):
    """``conv (kh x kw, bias) -> BN -> activation``, 'same' padding."""

    def __init__(
        self, cin: int, cout: int, kernel_size: tuple[int, int], activation: type[nn.Module]
    ) -> None:
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, padding=padding),
            nn.BatchNorm2d(cout),
            activation(),
        )


class ReLayNet(nn.Module):
    """ReLayNet with max-unpooling decoder.

    Args:
        in_channels: image channels (1 for OCT).
        num_classes: output classes (10 for Duke DME: vitreous, 7 layers, below RPE, fluid).
        num_filters: channels of every block.
        kernel_size: ``(rows, columns)`` of the block convolutions; both odd.
        activation: ``"prelu"`` (PyTorch release) or ``"relu"`` (MatConvNet release).

    Raises:
        ValueError: for an even kernel size or an unknown activation.

    Examples::

        >>> net = ReLayNet(in_channels=1, num_classes=10)
        >>> net(torch.zeros(2, 1, 496, 64)).shape
        torch.Size([2, 10, 496, 64])
    """

    size_divisor = 8
    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        num_filters: int = 64,
        kernel_size: tuple[int, int] | list[int] = (7, 3),
        activation: str = "prelu",
    ) -> None:
        super().__init__()
        kernel = (int(kernel_size[0]), int(kernel_size[1]))
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise ValueError(f"ReLayNet kernel_size must be odd in both axes, got {kernel}.")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"ReLayNet activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}."
            )
        act = _ACTIVATIONS[activation]
        nf = num_filters
        self.encoders = nn.ModuleList(
            [_ConvBNAct(in_channels if k == 0 else nf, nf, kernel, act) for k in range(3)]
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        self.bottleneck = _ConvBNAct(nf, nf, kernel, act)
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
        self.decoders = nn.ModuleList([_ConvBNAct(2 * nf, nf, kernel, act) for _ in range(3)])
        self.classifier = nn.Conv2d(nf, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, K, H, W)`` raw logits; H and W multiples of 8."""
        skips, indices = [], []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x, idx = self.pool(x)
            indices.append(idx)
        x = self.bottleneck(x)
        for decoder, skip, idx in zip(
            self.decoders, reversed(skips), reversed(indices), strict=True
        ):
            # Official order: the encoder output first, then the unpooled decoder features.
            x = decoder(torch.cat((skip, self.unpool(x, idx, output_size=skip.shape[-2:])), dim=1))
        return self.classifier(x)
