"""Hybrid-feature choroid segmentation after Masood et al. (2024): CNN + Gabor/Haar/GLCM features.

Masood S., Ali S.G., Wang X., Masood A., Li P., Li H., Jung Y., Sheng B., Kim J., "Deep choroid
layer segmentation using hybrid features extraction from OCT images", The Visual Computer
40(4):2775-2792, 2024, doi:10.1007/s00371-023-02985-w.

**This is a reconstruction, not a reproduction.** There is no official code, and the paper's
pipeline is a cascade: a support vector machine trained on CNN features and another trained on
handcrafted texture features (Gabor, Haar, grey-level co-occurrence), their outputs combined
linearly. The layer sizes, filter banks and classifier settings could not be checked against
the paper text; the values below are OCTSeg's choices, informed by the paper's abstract and by
the loose reproduction in the methods catalogue's seed (whose defects are fixed here).

Structure (end-to-end trainable, logits out):

* ``cnn_branches`` CNN branches (default 1): five ``3x3 conv -> BN -> ReLU`` layers
  (64-128-256-128-64 channels) with max-pooling after the first three, upsampled bilinearly back
  to the input size.
* Fixed per-pixel texture features of the grayscale image (channel mean), all registered buffers
  and computed in torch (:mod:`octseg.models.blocks.texture`): a quadrature Gabor bank
  (6 orientations x 4 frequencies, energies), centred Haar-like edges at 3 scales, and local
  GLCM statistics (8 levels, 9 x 9 windows centred every 4 pixels and interpolated to every
  pixel, distances 1 and 2, 4 angles, 6 statistics).
* Two linear per-pixel classifiers (``1x1`` convolutions) in place of the two SVMs: one on the
  CNN features, one on the BatchNorm-standardised texture features. Their logits are summed
  (the paper's linear combination) and also returned in ``aux["cnn_logits"]`` and
  ``aux["texture_logits"]``, so ``loss=masood`` trains each classifier on its own as well as
  the combination.

Deviations from the paper (as far as the abstract tells) and from the seed:

* One end-to-end network with linear classifiers trained by cross-entropy + Dice instead of
  two separately trained SVMs.
* Multi-class (any ``num_classes``) instead of binary choroid segmentation.
* Seed defects fixed: raw logits instead of a sigmoid; GLCM statistics are per pixel (local
  window) instead of one vector per image broadcast to every pixel, computed in torch on the
  input's device instead of numpy, with angles in radians; Gabor kernels have odd sizes, are
  normalised and zero-mean, stay below the Nyquist frequency, and are built once as buffers;
  the seed's duplicate orientations (theta and theta +/- pi give the same cosine filter) are
  replaced by 6 distinct ones; Haar kernels are centred (odd sizes); the four identical CNN
  branches are one by default (``cnn_branches=4`` restores the seed's redundancy); any number
  of input channels (texture features use their mean).

Input: any ``H x W`` through :class:`~octseg.models.wrappers.PadToDivisor` (multiples of 8 keep
the CNN branch's pooling aligned).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from octseg.models.base import SegOutput
from octseg.models.blocks.texture import GaborBank, HaarBank, LocalGLCM

__all__ = ["Masood2024", "CNNBranch", "TextureFeatures"]


class CNNBranch(nn.Module):
    """Five ``3x3 conv -> BN -> ReLU`` layers, max-pooled after the first three, upsampled back.

    Args:
        in_channels: image channels.
        widths: channels of the five convolutions.
    """

    def __init__(self, in_channels: int, widths: Sequence[int] = (64, 128, 256, 128, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for k, c_out in enumerate(widths):
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if k < 3:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.out_channels = int(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, widths[-1], H, W]``."""
        y = self.body(x)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class TextureFeatures(nn.Module):
    """Gabor, Haar-like and local GLCM features of the channel-mean image, concatenated.

    Args:
        gabor_orientations: orientations of the Gabor bank (evenly spaced in ``[0, pi)``).
        gabor_frequencies: Gabor frequencies in cycles per pixel.
        haar_scales: Haar-like half-widths.
        glcm_levels: GLCM grey levels.
        glcm_window: odd GLCM window size.
        glcm_distances: GLCM offset distances (pixels).
        glcm_angles: GLCM offset angles (radians).
        glcm_stride: spacing of the GLCM window centres (1 = every pixel's own window).
    """

    def __init__(
        self,
        gabor_orientations: int = 6,
        gabor_frequencies: Sequence[float] = (0.1, 0.2, 0.3, 0.4),
        haar_scales: Sequence[int] = (1, 2, 4),
        glcm_levels: int = 8,
        glcm_window: int = 9,
        glcm_distances: Sequence[int] = (1, 2),
        glcm_angles: Sequence[float] = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4),
        glcm_stride: int = 4,
    ) -> None:
        super().__init__()
        self.gabor = GaborBank(gabor_orientations, gabor_frequencies)
        self.haar = HaarBank(haar_scales)
        self.glcm = LocalGLCM(glcm_levels, glcm_window, glcm_distances, glcm_angles, glcm_stride)
        self.out_channels = (
            self.gabor.out_channels + self.haar.out_channels + self.glcm.out_channels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, F, H, W]``; no gradient flows back to ``x`` (fixed features)."""
        gray = x.detach().mean(dim=1, keepdim=True)
        return torch.cat((self.gabor(gray), self.haar(gray), self.glcm(gray)), dim=1)


class Masood2024(nn.Module):
    """CNN features and fixed texture features, each with a linear per-pixel classifier.

    Args:
        in_channels: image channels.
        num_classes: output classes, background included.
        cnn_branches: identical CNN branches whose features are concatenated (seed: 4).
        texture: keyword arguments of :class:`TextureFeatures` (banks and GLCM settings).

    Examples::

        >>> net = Masood2024(in_channels=1, num_classes=10)
        >>> out = net(torch.zeros(2, 1, 64, 96))
        >>> out.logits.shape, out.aux["texture_logits"].shape
        (torch.Size([2, 10, 64, 96]), torch.Size([2, 10, 64, 96]))
    """

    size_divisor = 8
    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        cnn_branches: int = 1,
        texture: dict | None = None,
    ) -> None:
        super().__init__()
        if cnn_branches < 1:
            raise ValueError(f"Masood2024 cnn_branches must be >= 1, got {cnn_branches}.")
        self.branches = nn.ModuleList([CNNBranch(in_channels) for _ in range(cnn_branches)])
        self.texture = TextureFeatures(**dict(texture or {}))
        cnn_channels = sum(b.out_channels for b in self.branches)
        self.cnn_head = nn.Conv2d(cnn_channels, num_classes, kernel_size=1)
        # Standardises the fixed features (their scales differ by orders of magnitude), as an
        # SVM's inputs would be.
        self.texture_norm = nn.BatchNorm2d(self.texture.out_channels)
        self.texture_head = nn.Conv2d(self.texture.out_channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> SegOutput:
        """``[B, C_in, H, W] -> SegOutput`` with logits ``[B, K, H, W]`` (H, W multiples of 8)."""
        cnn = torch.cat([branch(x) for branch in self.branches], dim=1)
        cnn_logits = self.cnn_head(cnn)
        texture_logits = self.texture_head(self.texture_norm(self.texture(x)))
        return SegOutput(
            logits=cnn_logits + texture_logits,
            aux={"cnn_logits": cnn_logits, "texture_logits": texture_logits},
        )
