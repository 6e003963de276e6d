"""f-AnoGAN: a Wasserstein GAN of healthy 64 x 64 patches and an encoder into its latent space.

Schlegl T., Seeböck P., Waldstein S.M., Langs G., Schmidt-Erfurth U., "f-AnoGAN: Fast
unsupervised anomaly detection with generative adversarial networks", Medical Image Analysis
54:30-44, 2019, doi:10.1016/j.media.2019.01.010. Official code: tSchlegl/f-AnoGAN (TensorFlow 1).

The networks of the official code (``wgangp_64x64.py``, ``z_encoding_izif.py``), with
``dim = 64`` and ``z`` in R^128 drawn from N(0, I):

* :class:`FAnoGANGenerator`: linear ``z -> 8dim x 4 x 4``, four pre-activation residual blocks
  that double the resolution (nearest upsampling before the convolutions; BatchNorm), then
  BatchNorm, ReLU, a 3 x 3 convolution to one channel and ``tanh``: a patch in ``[-1, 1]``.
* :class:`FAnoGANCritic`: a 3 x 3 convolution, four residual blocks that halve the resolution
  (mean pooling after the second convolution; layer normalisation over ``(C, H, W)`` with a
  per-channel scale and offset, as WGAN-GP needs a critic without batch statistics), the
  flattened ``8dim x 4 x 4`` features ``f(x)`` (used by the izi_f loss) and a linear output.
* :class:`FAnoGANEncoder`: the critic's structure with BatchNorm and a linear output to ``z``
  (no clipping or ``tanh``: the official default ``Z_REG_TYPE = None``).

:class:`FAnoGAN` holds the three and applies them to B-scans of any size: overlapping patches
(:func:`patch_starts`), the izi_f anomaly score per patch (image residual + kappa x critic-feature
residual, both mean squared errors), the pixel residual ``|x - G(E(x))|`` stitched over the
B-scan by averaging the overlapping patches (:func:`stitch_patches`), and a score per B-scan.

Deviations from the official code:

* Weights start from PyTorch's default initialisation, not tflib's He/Glorot uniform.
* Inputs are our normalised B-scans mapped back to ``[-1, 1]`` by the module (the official code
  reads 8-bit patches and scales them by ``2 (x / 255 - 0.5)``).
* B-scans are tiled with overlapping patches and residual maps averaged where they overlap; the
  paper scores single patches (its per-pixel residual maps are per patch). The B-scan score (the
  maximum, or mean, of its patch scores) is ours: the paper reports patch-level detection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from octseg.models.base import SegOutput
from octseg.utils.tensors import pad_bottom_right

__all__ = [
    "FAnoGAN",
    "FAnoGANCritic",
    "FAnoGANEncoder",
    "FAnoGANGenerator",
    "ResampleBlock",
    "extract_patches",
    "patch_starts",
    "stitch_patches",
]

#: Side of the square patches the networks are built for (4 x 2^4).
PATCH = 64


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm with one group = layer normalisation over (C, H, W) with per-channel affine,
    # exactly tflib's Layernorm over axes [1, 2, 3].
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(1, channels)


class ResampleBlock(nn.Module):
    """Pre-activation residual block of the WGAN-GP ResNets (norm, ReLU, conv, norm, ReLU,
    conv), optionally doubling (``"up"``) or halving (``"down"``) the resolution.

    Up: nearest upsampling before the first 3 x 3 convolution and before the 1 x 1 shortcut.
    Down: mean pooling after the second 3 x 3 convolution and before the 1 x 1 shortcut. The
    shortcut is the identity when neither the channels nor the resolution change.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        resample: ``"up"``, ``"down"`` or None.
        norm: ``"batch"`` (generator, encoder) or ``"layer"`` (critic).
    """

    def __init__(
        self, in_channels: int, out_channels: int, resample: str | None, norm: str
    ) -> None:
        super().__init__()
        if resample not in ("up", "down", None):
            raise ValueError(f"resample must be 'up', 'down' or None, got {resample!r}.")
        self.resample = resample
        mid = out_channels if resample == "up" else in_channels
        self.norm1 = _norm(norm, in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid, 3, padding=1, bias=False)
        self.norm2 = _norm(norm, mid)
        self.conv2 = nn.Conv2d(mid, out_channels, 3, padding=1)
        same = in_channels == out_channels and resample is None
        self.shortcut = None if same else nn.Conv2d(in_channels, out_channels, 1)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.resample == "up" else x

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.resample == "down" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self._down(self.shortcut(self._up(x)))
        out = self.conv1(self._up(F.relu(self.norm1(x))))
        out = self._down(self.conv2(F.relu(self.norm2(out))))
        return skip + out


class FAnoGANGenerator(nn.Module):
    """``z [B, latent_dim] -> patch [B, out_channels, 64, 64]`` in ``[-1, 1]``.

    Args:
        latent_dim: size of ``z`` (128).
        dim: base width (64).
        out_channels: image channels (1).
    """

    def __init__(self, latent_dim: int = 128, dim: int = 64, out_channels: int = 1) -> None:
        super().__init__()
        self.latent_dim, self.dim = latent_dim, dim
        self.input = nn.Linear(latent_dim, 4 * 4 * 8 * dim)
        widths = [8 * dim, 8 * dim, 4 * dim, 2 * dim, dim]
        self.blocks = nn.Sequential(
            *(ResampleBlock(a, b, "up", "batch") for a, b in zip(widths, widths[1:], strict=False))
        )
        self.out_norm = nn.BatchNorm2d(dim)
        self.output = nn.Conv2d(dim, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.input(z).view(-1, 8 * self.dim, 4, 4)
        return torch.tanh(self.output(F.relu(self.out_norm(self.blocks(x)))))


class _DownNet(nn.Module):
    """The critic's trunk (and the encoder's): 64 x 64 patch -> flattened ``8dim x 4 x 4``."""

    def __init__(self, in_channels: int, dim: int, norm: str) -> None:
        super().__init__()
        self.input = nn.Conv2d(in_channels, dim, 3, padding=1)
        widths = [dim, 2 * dim, 4 * dim, 8 * dim, 8 * dim]
        self.blocks = nn.Sequential(
            *(ResampleBlock(a, b, "down", norm) for a, b in zip(widths, widths[1:], strict=False))
        )
        self.features_dim = 4 * 4 * 8 * dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (PATCH, PATCH):
            raise ValueError(
                f"f-AnoGAN networks take {PATCH} x {PATCH} patches, got {tuple(x.shape[-2:])}; "
                "B-scans go through FAnoGAN, which tiles them."
            )
        return self.blocks(self.input(x)).flatten(1)


class FAnoGANCritic(nn.Module):
    """WGAN-GP critic: ``patch [B, C, 64, 64] -> score [B]``; :meth:`features` gives the
    flattened last feature map ``f(x) [B, 8dim*16]`` of the izi_f loss.

    Args:
        in_channels: image channels (1).
        dim: base width (64).
    """

    def __init__(self, in_channels: int = 1, dim: int = 64) -> None:
        super().__init__()
        self.trunk = _DownNet(in_channels, dim, "layer")
        self.output = nn.Linear(self.trunk.features_dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.trunk(x)).squeeze(1)


class FAnoGANEncoder(nn.Module):
    """izi_f encoder: ``patch [B, C, 64, 64] -> z [B, latent_dim]`` (the critic's structure with
    BatchNorm).

    Args:
        in_channels: image channels (1).
        dim: base width (64).
        latent_dim: size of ``z`` (128).
    """

    def __init__(self, in_channels: int = 1, dim: int = 64, latent_dim: int = 128) -> None:
        super().__init__()
        self.trunk = _DownNet(in_channels, dim, "batch")
        self.output = nn.Linear(self.trunk.features_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.trunk(x))


# ---------------------------------------------------------------------- tiling and stitching
def patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets of patches covering ``[0, size)``: every ``stride``, plus a last patch
    flush with the end when the stride does not land there (``size >= patch``)."""
    if size < patch:
        raise ValueError(f"size {size} is smaller than the patch ({patch}); pad first.")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}.")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def extract_patches(
    image: torch.Tensor, ys: list[int], xs: list[int], patch: int = PATCH
) -> torch.Tensor:
    """The patches of ``image [C, H, W]`` at the grid ``ys x xs``: ``[len(ys)*len(xs), C, p, p]``
    (row-major: all ``xs`` of the first ``y`` first)."""
    windows = image.unfold(1, patch, 1).unfold(2, patch, 1)  # [C, H-p+1, W-p+1, p, p] view
    rows = torch.as_tensor(ys, device=image.device)
    cols = torch.as_tensor(xs, device=image.device)
    picked = windows[:, rows][:, :, cols]  # [C, Y, X, p, p]
    return picked.permute(1, 2, 0, 3, 4).reshape(len(ys) * len(xs), image.shape[0], patch, patch)


def stitch_patches(
    values: torch.Tensor, ys: list[int], xs: list[int], hw: tuple[int, int]
) -> torch.Tensor:
    """Places per-patch maps ``[P, p, p]`` (row-major over ``ys x xs``) into an ``hw`` map,
    averaging where patches overlap; pixels no patch covers are NaN."""
    p = values.shape[-1]
    h, w = hw
    dev = values.device
    offsets = (torch.arange(p, device=dev)[:, None] * w + torch.arange(p, device=dev)).view(-1)
    y0 = torch.as_tensor(ys, device=dev)[:, None] * w
    x0 = torch.as_tensor(xs, device=dev)[None, :]
    index = ((y0 + x0).view(-1, 1) + offsets).view(-1)
    total = torch.zeros(h * w, dtype=values.dtype, device=dev)
    total.index_add_(0, index, values.reshape(-1))
    count = torch.zeros(h * w, dtype=values.dtype, device=dev)
    count.index_add_(0, index, torch.ones_like(values).reshape(-1))
    return (total / count).view(h, w)  # 0 / 0 = NaN where uncovered


class FAnoGAN(nn.Module):
    """Generator, critic and encoder of f-AnoGAN, and their use on whole B-scans.

    ``forward(x)`` takes B-scans ``[B, C, H, W]`` scaled to ``[-1, 1]`` (any ``H, W``; sizes
    below 64 are padded by reflection) and returns a :class:`SegOutput` whose ``logits`` are
    the two-class view ``[-r, r]`` of the stitched residual ``r = |x - G(E(x))|`` (channel
    mean) and whose ``aux`` holds ``residual [B, H, W]``, ``recon [B, C, H, W]`` (stitched
    reconstruction) and ``scan_score [B]`` (B-scan anomaly score).

    Args:
        in_channels: image channels (1).
        latent_dim: size of ``z`` (128).
        dim: base width of the three networks (64; smaller for CPU-sized runs).
        kappa: weight of the critic-feature residual in the izi_f score (1).
        stride: patch stride when tiling a B-scan (32: patches overlap by half).
        scan_reduction: B-scan score from its patch scores, ``"max"`` or ``"mean"``.
        chunk: patches per forward pass when tiling (bounds memory).
    """

    size_divisor = 1
    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        latent_dim: int = 128,
        dim: int = 64,
        kappa: float = 1.0,
        stride: int = 32,
        scan_reduction: str = "max",
        chunk: int = 64,
    ) -> None:
        super().__init__()
        if scan_reduction not in ("max", "mean"):
            raise ValueError(
                f"model.net.scan_reduction must be 'max' or 'mean', got {scan_reduction!r}."
            )
        if not 1 <= int(stride) <= PATCH:
            raise ValueError(f"model.net.stride must be in [1, {PATCH}], got {stride}.")
        self.in_channels, self.latent_dim = in_channels, latent_dim
        self.kappa, self.stride, self.chunk = float(kappa), int(stride), int(chunk)
        self.scan_reduction = scan_reduction
        self.generator = FAnoGANGenerator(latent_dim, dim, in_channels)
        self.critic = FAnoGANCritic(in_channels, dim)
        self.encoder = FAnoGANEncoder(in_channels, dim, latent_dim)

    def sample_z(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """``n`` latent vectors from the prior N(0, I)."""
        return torch.randn(n, self.latent_dim, device=device)

    def izif(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """izi_f terms of patches ``x [N, C, 64, 64]``: ``recon = G(E(x))``, per patch
        ``image = mean (x - recon)^2``, ``feature = mean (f(x) - f(recon))^2`` and
        ``score = image + kappa * feature`` (the anomaly score A(x)), all ``[N]``."""
        recon = self.generator(self.encoder(x))
        image = (x - recon).square().flatten(1).mean(1)
        feature = (self.critic.features(x) - self.critic.features(recon)).square().mean(1)
        return {
            "recon": recon,
            "image": image,
            "feature": feature,
            "score": image + self.kappa * feature,
        }

    def forward(self, x: torch.Tensor) -> SegOutput:
        b, c, h, w = x.shape
        ph, pw = max(PATCH - h, 0), max(PATCH - w, 0)
        if ph or pw:
            x = pad_bottom_right(x, ph, pw, "reflect")
        hp, wp = x.shape[-2:]
        ys, xs = patch_starts(hp, PATCH, self.stride), patch_starts(wp, PATCH, self.stride)
        residuals, recons, scores = [], [], []
        for i in range(b):
            patches = extract_patches(x[i], ys, xs)
            parts = [self.izif(chunk) for chunk in patches.split(self.chunk)]
            recon = torch.cat([p["recon"] for p in parts])
            score = torch.cat([p["score"] for p in parts])
            residual = (patches - recon).abs().mean(1)
            residuals.append(stitch_patches(residual, ys, xs, (hp, wp))[:h, :w])
            recons.append(
                torch.stack(
                    [stitch_patches(recon[:, k], ys, xs, (hp, wp))[:h, :w] for k in range(c)]
                )
            )
            scores.append(score.amax() if self.scan_reduction == "max" else score.mean())
        residual = torch.stack(residuals)
        return SegOutput(
            logits=torch.stack([-residual, residual], dim=1),
            aux={
                "residual": residual,
                "recon": torch.stack(recons),
                "scan_score": torch.stack(scores),
            },
        )
