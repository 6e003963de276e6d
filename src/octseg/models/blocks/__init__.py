"""Building blocks shared by several OCTSeg networks.

* :mod:`octseg.models.blocks.init` — the named weight-initialisation schemes of the methods
  (:func:`~octseg.models.blocks.init.init_weights`).
* :mod:`octseg.models.blocks.conv` — plain convolution blocks of the U-Net family.
* :mod:`octseg.models.blocks.ffc` — fast Fourier convolution (FFC) blocks (Y-Net, and later the
  EdgeAL/LaMa-style generators).
* :mod:`octseg.models.blocks.wavelet` — fixed-kernel Haar DWT and wavelet channel attention
  (WATNet).
* :mod:`octseg.models.blocks.transformer` — pre-norm ViT encoder and size-adaptive grid position
  embeddings (LightReSeg).
* :mod:`octseg.models.blocks.graph` — GloRe global graph reasoning unit (MGU-Net).
* :mod:`octseg.models.blocks.texture` — fixed per-pixel Gabor, Haar-like and local GLCM features
  (Masood 2024).
* :mod:`octseg.models.blocks.plain_unet` — U-Net pieces without normalisation, Keras layout
  (FourierNet).
* :mod:`octseg.models.blocks.pyramid` — CE-Net's residual multi-kernel pooling (RetiFluidNet).
* :mod:`octseg.models.blocks.resunetpp` — ResUNet++ blocks: squeeze-excitation residual blocks,
  summed ASPP, attention decoder blocks (ISLAM).
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
from octseg.models.blocks.graph import GloReUnit, GraphConv
from octseg.models.blocks.init import INIT_SCHEMES, init_weights
from octseg.models.blocks.plain_unet import PlainUNetBlock, PlainUNetDecoder, PlainUNetEncoder
from octseg.models.blocks.pyramid import ResidualMultiKernelPooling
from octseg.models.blocks.texture import GaborBank, HaarBank, LocalGLCM
from octseg.models.blocks.transformer import (
    GridPositionEmbedding,
    MultiHeadSelfAttention,
    TransformerEncoder,
)
from octseg.models.blocks.wavelet import SUBBANDS, HaarDWT, WaveletChannelAttention

__all__ = [
    "INIT_SCHEMES",
    "init_weights",
    "DoubleConv",
    "UpConcat",
    "FFC",
    "FFCBNAct",
    "FourierUnit",
    "SpectralTransform",
    "merge_local_global",
    "GridPositionEmbedding",
    "MultiHeadSelfAttention",
    "TransformerEncoder",
    "SUBBANDS",
    "HaarDWT",
    "WaveletChannelAttention",
    "GloReUnit",
    "GraphConv",
    "GaborBank",
    "HaarBank",
    "LocalGLCM",
    "PlainUNetBlock",
    "PlainUNetEncoder",
    "PlainUNetDecoder",
    "ResidualMultiKernelPooling",
]
