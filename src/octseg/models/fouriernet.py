"""FourierNet: a cascaded U-Net whose first stage regresses Fourier-descriptor (FD) maps.

Cansiz S., Kesim C., Bektas S.N., Kulali Z., Hasanreisoglu M., Gunduz-Demir C., "FourierNet:
Shape-Preserving Network for Henle's Fiber Layer Segmentation in Optical Coherence Tomography
Images", IEEE Journal of Biomedical and Health Informatics, 2023 (venue and year as recorded in
the project's methods catalogue; the paper text was not available offline). No official code
was found; the Keras seed ``deepModels.cascaded`` described in the catalogue (section 3.2) was
read to understand the structure. Written from that reading; nothing copied.

Structure (blocks from :mod:`octseg.models.blocks.plain_unet`; ``features`` = 16, 32, 64, 128,
256; every block is ``conv3x3 -> ReLU -> Dropout(0.2)
-> conv3x3 -> ReLU`` with biases, He-uniform weights and zero biases, no normalisation):

* stage 1: one encoder (four blocks, each followed by 2x2 max-pooling, and a 256-channel
  bottleneck block) shared by one decoder per FD map (nearest-neighbour 2x upsampling,
  concatenation ``[upsampled, skip]``, a block), each ending in a linear 1x1 head (Glorot-uniform,
  Keras' default): one FD map;
* stage 2: a full U-Net of the same shape on ``[image, FD maps]`` with a ``num_classes`` head.

3,924,835 parameters for the paper's binary case with one FD map and 4,708,836 with two (the
catalogue's torch-equivalent counts of the Keras model, 3.92 M and 4.71 M; tested).

Output: :class:`~octseg.models.base.SegOutput` with the stage-2 logits and
``aux["fd_maps"]`` ``[B, M, H, W]``, regressed by
:class:`octseg.losses.fourier.FourierDescriptorLoss` (``loss=fouriernet``).

Deviations from the paper / seed code:

* **Multi-class** (the paper is binary, Henle's fibre layer vs. rest): ``M = len(fd_classes) *
  num_harmonics`` FD maps, one decoder each, as the seed builds one decoder per map; by default
  every class but 0 gets ``num_harmonics`` maps (Duke: 9 maps, 10,196,979 parameters). With
  ``shared_fd_decoder=True`` one decoder feeds an ``M``-channel head instead (fewer parameters
  and FLOPs; not in the paper).
* **Raw logits** instead of the softmax output layer.
* **Input normalisation**: the seed z-scores each image; here the DataModule's dataset-wide
  normalisation applies (as for every OCTSeg model).
* **Any size** through :class:`~octseg.models.wrappers.PadToDivisor` (the net needs multiples of
  16; the seed fixed the Keras input size to the training images).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from octseg.models.base import SegOutput
from octseg.models.blocks.plain_unet import PlainUNetDecoder, PlainUNetEncoder

__all__ = ["FourierNet"]


class FourierNet(nn.Module):
    """Cascaded U-Net: FD-map regression, then segmentation from ``[image, FD maps]``.

    Args:
        in_channels: image channels (1 for OCT).
        num_classes: output classes, background included (the paper: 2).
        fd_classes: labels that get FD maps (``None``: every class but 0). Only their number
            matters to the network; the loss (``loss=fouriernet``) reads the same setting.
        num_harmonics: FD harmonics per class (the seed's ``fd_channel``, default 1).
        features: block widths, finest first, bottleneck last (the seed: 16..256).
        dropout: dropout rate inside every block (the seed: 0.2).
        shared_fd_decoder: one stage-1 decoder with an ``M``-channel head instead of one decoder
            per FD map (not in the paper).

    Raises:
        ValueError: for FD classes outside ``0..num_classes-1``, no FD map, or fewer than two
            feature levels.

    Examples::

        >>> net = FourierNet(in_channels=1, num_classes=2)
        >>> out = net(torch.zeros(1, 1, 64, 96))
        >>> out.logits.shape, out.aux["fd_maps"].shape
        (torch.Size([1, 2, 64, 96]), torch.Size([1, 1, 64, 96]))
    """

    size_divisor = 16
    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        fd_classes: Sequence[int] | None = None,
        num_harmonics: int = 1,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: float = 0.2,
        shared_fd_decoder: bool = False,
    ) -> None:
        super().__init__()
        classes = (
            list(range(1, num_classes)) if fd_classes is None else [int(c) for c in fd_classes]
        )
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(
                f"FourierNet fd_classes {bad} are outside 0..{num_classes - 1}; "
                "set model.net.fd_classes to labels of the dataset (or null for all but 0)."
            )
        num_maps = len(classes) * int(num_harmonics)
        if num_maps < 1:
            raise ValueError(
                f"FourierNet needs at least one FD map, got fd_classes={classes} and "
                f"num_harmonics={num_harmonics} (model.net.fd_classes / num_harmonics)."
            )
        features = [int(f) for f in features]
        if len(features) < 2:
            raise ValueError(f"FourierNet features need >= 2 levels, got {features}.")
        self.size_divisor = 2 ** (len(features) - 1)
        self.fd_classes = classes
        self.num_harmonics = int(num_harmonics)
        self.num_fd_maps = num_maps
        self.encoder = PlainUNetEncoder(in_channels, features, dropout)
        heads = [num_maps] if shared_fd_decoder else [1] * num_maps
        self.fd_decoders = nn.ModuleList([PlainUNetDecoder(features, n, dropout) for n in heads])
        self.seg_encoder = PlainUNetEncoder(in_channels + num_maps, features, dropout)
        self.seg_decoder = PlainUNetDecoder(features, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> SegOutput:
        """``(B, C_in, H, W) ->`` logits ``(B, K, H, W)`` and ``aux["fd_maps"]`` ``(B, M, H, W)``;
        H and W multiples of ``size_divisor`` (16 by default)."""
        bottom, skips = self.encoder(x)
        fd_maps = torch.cat([decoder(bottom, skips) for decoder in self.fd_decoders], dim=1)
        bottom, skips = self.seg_encoder(torch.cat((x, fd_maps), dim=1))
        return SegOutput(logits=self.seg_decoder(bottom, skips), aux={"fd_maps": fd_maps})
