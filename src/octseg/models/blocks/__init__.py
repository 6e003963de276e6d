"""Building blocks shared by several OCTSeg networks.

* :mod:`octseg.models.blocks.conv` — plain convolution blocks of the U-Net family.
* :mod:`octseg.models.blocks.ffc` — fast Fourier convolution (FFC) blocks (Y-Net, and later the
  EdgeAL/LaMa-style generators).
* :mod:`octseg.models.blocks.plain_unet` — U-Net pieces without normalisation, Keras layout
  (FourierNet).
"""

from __future__ import annotations

from octseg.models.blocks.conv import DoubleConv, UpConcat
from octseg.models.blocks.ffc import (
    FFC,
    FFCBNAct,
    FourierUnit,
    SpectralTransform,
    merge_local_global,
)
from octseg.models.blocks.plain_unet import PlainUNetBlock, PlainUNetDecoder, PlainUNetEncoder

__all__ = [
    "DoubleConv",
    "UpConcat",
    "FFC",
    "FFCBNAct",
    "FourierUnit",
    "SpectralTransform",
    "merge_local_global",
    "PlainUNetBlock",
    "PlainUNetEncoder",
    "PlainUNetDecoder",
]
