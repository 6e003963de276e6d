"""Fixed (non-trainable) per-pixel texture features in torch: Gabor, Haar-like and local GLCM.

Used by the hybrid-feature network of Masood et al. (2024, :mod:`octseg.models.masood`) and
available to any network that wants handcrafted texture channels. Every bank maps a grayscale
batch ``[B, 1, H, W]`` to feature maps ``[B, F, H, W]`` at the input resolution; filter kernels
are registered buffers (they follow ``.to(device/dtype)``, reach no optimizer, get no gradient
and, being rebuilt from the settings, are not saved in checkpoints), kernels have odd sizes so
"same" padding is symmetric, borders are padded by replication (a constant image gives exactly
zero edge responses), and angles are in radians.

Conventions: image axes are ``y`` (rows, downwards) and ``x`` (columns, rightwards). An angle
``theta`` is measured from the ``+x`` axis towards ``-y`` (counter-clockwise as displayed), the
convention of ``skimage.feature.graycomatrix``: 0 = to the right, pi/2 = upwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GaborBank", "HaarBank", "LocalGLCM", "GLCM_FEATURES", "check_angles"]

GLCM_FEATURES = ("contrast", "dissimilarity", "homogeneity", "asm", "entropy", "correlation")


def check_angles(angles: Sequence[float], name: str) -> list[float]:
    """Returns ``angles`` as floats; raises if one looks like degrees (outside ``[-2pi, 2pi]``)."""
    values = [float(a) for a in angles]
    bad = [a for a in values if abs(a) > 2 * math.pi + 1e-9]
    if bad:
        raise ValueError(
            f"{name} are in radians, got {values} ({bad} lie outside [-2pi, 2pi]: degrees?); "
            f"e.g. [0, 0.785398, 1.570796, 2.356194] for 0/45/90/135 degrees."
        )
    return values


def _pad_same(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    half = kernel_size // 2
    return F.pad(x, (half, half, half, half), mode="replicate")


def _grid(half: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Row (``y``, downwards) and column (``x``) coordinates of a ``(2 half + 1)^2`` kernel."""
    r = torch.arange(-half, half + 1, dtype=dtype)
    return torch.meshgrid(r, r, indexing="ij")


class GaborBank(nn.Module):
    """Quadrature Gabor filters; outputs the local energy ``|even + i odd|`` per filter.

    For every frequency ``f`` (cycles per pixel, below the Nyquist 0.5) and orientation
    ``theta`` the kernel is ``g(x, y) exp(i 2 pi f u)`` with ``u = x cos theta - y sin theta``
    (the wave travels along ``theta``) and an isotropic Gaussian envelope ``g`` of
    ``sigma = sigma_f / f`` (``sigma_f`` = 0.56: about one octave of bandwidth), size
    ``2 ceil(3 sigma) + 1``, normalised to sum 1. The even part is made zero-mean, so a constant
    image gives 0; the magnitude makes the response independent of the grating's phase (a
    matched unit-amplitude grating gives about 0.5).

    Args:
        orientations: number of orientations, evenly spaced in ``[0, pi)``.
        frequencies: spatial frequencies in cycles per pixel, each in ``(0, 0.5]``.
        sigma_f: envelope width times frequency.

    Output: ``[B, orientations * len(frequencies), H, W]``, frequency-major
    (channel ``i * orientations + j`` = frequency ``i``, orientation ``j``).
    """

    def __init__(
        self,
        orientations: int = 6,
        frequencies: Sequence[float] = (0.1, 0.2, 0.3, 0.4),
        sigma_f: float = 0.56,
    ) -> None:
        super().__init__()
        freqs = [float(f) for f in frequencies]
        if orientations < 1 or not freqs or any(not 0.0 < f <= 0.5 for f in freqs):
            raise ValueError(
                f"GaborBank needs orientations >= 1 and frequencies in (0, 0.5] cycles/pixel, "
                f"got orientations={orientations}, frequencies={freqs}."
            )
        self.orientations = [math.pi * k / orientations for k in range(orientations)]
        self.frequencies = freqs
        self.kernel_sizes: list[int] = []
        for i, f in enumerate(freqs):
            kernel = self._kernels(f, float(sigma_f) / f)
            self.kernel_sizes.append(kernel.shape[-1])
            self.register_buffer(f"kernel{i}", kernel.float(), persistent=False)

    @property
    def out_channels(self) -> int:
        return len(self.orientations) * len(self.frequencies)

    def _kernels(self, frequency: float, sigma: float) -> torch.Tensor:
        """``[2 * orientations, 1, k, k]``: even kernels, then odd kernels."""
        y, x = _grid(math.ceil(3 * sigma))
        envelope = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
        envelope = envelope / envelope.sum()
        even, odd = [], []
        for theta in self.orientations:
            phase = 2 * math.pi * frequency * (x * math.cos(theta) - y * math.sin(theta))
            e = envelope * torch.cos(phase)
            even.append(e - envelope * e.sum())  # remove the DC response (sum(envelope) = 1)
            odd.append(envelope * torch.sin(phase))
        return torch.stack(even + odd)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W] -> [B, F, H, W]`` Gabor energies."""
        n = len(self.orientations)
        outs = []
        for i, size in enumerate(self.kernel_sizes):
            r = F.conv2d(_pad_same(x, size), getattr(self, f"kernel{i}"))
            outs.append(torch.sqrt(r[:, :n] ** 2 + r[:, n:] ** 2 + 1e-12))
        return torch.cat(outs, dim=1)


class HaarBank(nn.Module):
    """Centred Haar-like features at several scales: horizontal edge, vertical edge, diagonal.

    At scale ``s`` the kernel is ``(2s + 1)^2``: +1 on the ``s`` rows above the centre row and
    -1 on the ``s`` rows below (horizontal edge; the centre row is 0), the transpose (vertical
    edge: left minus right), and the product of both signs (diagonal, the 2x2 Haar wavelet's
    third band). Each kernel is divided by its number of +1 entries, so a unit step across it
    gives 1 and a constant image 0.

    Args:
        scales: half-widths ``s`` (kernel sizes ``2s + 1``).

    Output: ``[B, 3 * len(scales), H, W]``, scale-major (horizontal, vertical, diagonal).
    """

    def __init__(self, scales: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.scales = [int(s) for s in scales]
        if not self.scales or min(self.scales) < 1:
            raise ValueError(f"HaarBank scales must be positive integers, got {list(scales)}.")
        for i, s in enumerate(self.scales):
            y, x = _grid(s)
            sy, sx = -torch.sign(y), -torch.sign(x)  # +1 above / left of the centre
            kernels = torch.stack([sy, sx, sy * sx])
            kernels = kernels / kernels.clamp_min(0).sum(dim=(1, 2), keepdim=True)
            self.register_buffer(f"kernel{i}", kernels[:, None].float(), persistent=False)

    @property
    def out_channels(self) -> int:
        return 3 * len(self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W] -> [B, F, H, W]`` Haar-like responses."""
        return torch.cat(
            [
                F.conv2d(_pad_same(x, 2 * s + 1), getattr(self, f"kernel{i}"))
                for i, s in enumerate(self.scales)
            ],
            dim=1,
        )


class LocalGLCM(nn.Module):
    """Per-pixel grey-level co-occurrence (GLCM) statistics over a sliding window.

    The image is quantised to ``levels`` grey levels between its own ``quantiles`` (per image,
    so that speckle outliers do not squeeze the range). For every offset (distance ``d`` along
    angle ``theta``: ``dy = -round(d sin theta)``, ``dx = round(d cos theta)``, as
    ``skimage.feature.graycomatrix``) each pixel pairs its level ``i`` with the level ``j`` of
    the pixel at the offset (pairs whose partner lies outside the image are left out, as in
    skimage). The pairs of the pixels inside a ``window x window`` box give the symmetric,
    normalised co-occurrence matrix ``P`` of the box's centre, from which six statistics follow:

    * contrast ``sum P (i-j)^2 / (L-1)^2``, dissimilarity ``sum P |i-j| / (L-1)`` (both in [0, 1]);
    * homogeneity ``sum P / (1 + (i-j)^2)``; angular second moment ``sum P^2``;
    * entropy ``-sum P log P / log(L^2)`` (in [0, 1]);
    * correlation ``(sum P i j - mu^2) / sigma^2`` (1 where the window has one grey level,
      as skimage).

    Windows are centred every ``stride`` pixels (the pixels of the image's ``stride`` grid) and
    the statistics are interpolated bilinearly to every other pixel; ``stride=1`` evaluates
    every pixel's own window (exact, slower: the ``L^2``-bin histograms dominate). Windows at the
    border hold fewer pairs. Batched, any device.

    Args:
        levels: grey levels ``L``.
        window: odd window size.
        distances: pixel distances of the offsets.
        angles: offset directions in radians.
        stride: spacing of the evaluated window centres.
        quantiles: lower and upper intensity quantiles mapped to the first and last level.

    Output: ``[B, 6 * len(distances) * len(angles), H, W]``, offset-major in the order
    distance, angle, then :data:`GLCM_FEATURES`.
    """

    def __init__(
        self,
        levels: int = 8,
        window: int = 9,
        distances: Sequence[int] = (1, 2),
        angles: Sequence[float] = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4),
        stride: int = 4,
        quantiles: tuple[float, float] = (0.01, 0.99),
    ) -> None:
        super().__init__()
        if levels < 2 or window < 1 or window % 2 == 0 or stride < 1:
            raise ValueError(
                f"LocalGLCM needs levels >= 2, an odd window and stride >= 1, got "
                f"levels={levels}, window={window}, stride={stride}."
            )
        lo, hi = (float(q) for q in quantiles)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(
                f"LocalGLCM quantiles must satisfy 0 <= lo < hi <= 1, got {quantiles}."
            )
        self.levels = int(levels)
        self.window = int(window)
        self.stride = int(stride)
        self.quantiles = (lo, hi)
        self.offsets = [
            (-round(d * math.sin(a)), round(d * math.cos(a)))
            for d in distances
            for a in check_angles(angles, "LocalGLCM angles")
        ]
        if not self.offsets or any(o == (0, 0) for o in self.offsets):
            raise ValueError(f"LocalGLCM distances must be >= 1, got {list(distances)}.")

    @property
    def out_channels(self) -> int:
        return len(GLCM_FEATURES) * len(self.offsets)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Grey levels ``[B, 1, H, W]`` (float holding integers ``0..L-1``) of ``x``."""
        flat = x.flatten(1).float()
        q = torch.quantile(flat, torch.tensor(self.quantiles, device=x.device), dim=1)
        lo, hi = q[0].view(-1, 1, 1, 1), q[1].view(-1, 1, 1, 1)
        scaled = (x.float() - lo) / (hi - lo).clamp_min(1e-6)
        return torch.floor(scaled.clamp(0.0, 1.0) * self.levels).clamp(max=self.levels - 1)

    def _mean(self, t: torch.Tensor) -> torch.Tensor:
        """Window means of ``t`` at the window centres (pixels outside the image excluded)."""
        return F.avg_pool2d(
            t, self.window, stride=self.stride, padding=self.window // 2, count_include_pad=False
        )

    def _histogram(self, codes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Normalised pair-code histograms ``[B, L^2, h, w]`` of the windows at the centres.

        ``codes [B, 2, H, W]`` hold both orders of every pair (symmetric GLCM). The codes of
        every window are gathered at the centres only (``unfold`` with the stride) and counted
        with one scatter, never as a full-resolution ``L^2``-channel map.
        """
        bins = self.levels**2
        half = self.window // 2
        # Pixels outside the image (and pairs left out) go to an extra bin that is dropped.
        padded = F.pad(codes.float(), (half, half, half, half), value=float(bins))
        b, (h, w) = codes.shape[0], grid
        windows = F.unfold(padded, self.window, stride=self.stride).long()  # [B, 2 w^2, h w]
        # One bincount over (centre, code) pairs: centre c's bins are c (L^2 + 1) + code.
        centre = torch.arange(b * h * w, device=codes.device).view(b, 1, h * w)
        counts = torch.bincount(
            (centre * (bins + 1) + windows).flatten(), minlength=b * h * w * (bins + 1)
        )
        hist = counts.view(b, h, w, bins + 1)[..., :bins].permute(0, 3, 1, 2).float()
        return hist / hist.sum(dim=1, keepdim=True).clamp_min(1.0)

    def _offset_features(
        self, i: torch.Tensor, j: torch.Tensor, valid: torch.Tensor
    ) -> list[torch.Tensor]:
        """The six statistics at the window centres for pairs ``(i, j)``; pairs whose partner
        lies outside the image (``valid`` 0) count nowhere, as in skimage."""
        levels = self.levels
        share = self._mean(valid).clamp_min(1e-6)

        def mean(t: torch.Tensor) -> torch.Tensor:
            return self._mean(t * valid) / share

        diff = i - j
        contrast = mean(diff**2) / (levels - 1) ** 2
        dissimilarity = mean(diff.abs()) / (levels - 1)
        homogeneity = mean(1.0 / (1.0 + diff**2))
        # Symmetric matrix: every pair counts as (i, j) and (j, i).
        mu = mean((i + j) / 2)
        var = mean((i**2 + j**2) / 2) - mu**2
        cov = mean(i * j) - mu**2
        correlation = torch.where(var <= 1e-6, torch.ones_like(cov), cov / var.clamp_min(1e-6))
        codes = torch.cat((i * levels + j, j * levels + i), dim=1)
        codes = torch.where(valid > 0, codes, torch.full_like(codes, levels**2)).long()
        p = self._histogram(codes, tuple(contrast.shape[-2:]))
        asm = (p**2).sum(dim=1, keepdim=True)
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=1, keepdim=True)
        entropy = entropy / math.log(levels * levels)
        return [contrast, dissimilarity, homogeneity, asm, entropy, correlation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W] -> [B, F, H, W]`` local GLCM statistics (computed in float32)."""
        q = self.quantize(x)
        h, w = q.shape[-2:]
        reach = max(max(abs(dy), abs(dx)) for dy, dx in self.offsets)
        padded = F.pad(q, (reach, reach, reach, reach))
        inside = F.pad(torch.ones_like(q[:1]), (reach, reach, reach, reach))
        feats = []
        for dy, dx in self.offsets:
            rows, cols = slice(reach + dy, reach + dy + h), slice(reach + dx, reach + dx + w)
            feats.extend(
                self._offset_features(q, padded[..., rows, cols], inside[..., rows, cols])
            )
        out = torch.cat(feats, dim=1)
        if self.stride > 1:
            out = _centres_to_pixels(out, self.stride, h, w)
        return out.to(x.dtype)


def _centres_to_pixels(grid: torch.Tensor, stride: int, h: int, w: int) -> torch.Tensor:
    """Bilinear interpolation of values at pixels ``(stride a, stride b)`` to every pixel."""
    gh, gw = grid.shape[-2:]
    ys = torch.arange(h, device=grid.device, dtype=grid.dtype) / stride
    xs = torch.arange(w, device=grid.device, dtype=grid.dtype) / stride
    # align_corners=True: normalised -1 / 1 are the first / last centre; beyond the last
    # centre (at most stride - 1 pixels) the border value is kept.
    ny = 2 * ys / max(gh - 1, 1) - 1
    nx = 2 * xs / max(gw - 1, 1) - 1
    coords = torch.stack(torch.meshgrid(ny, nx, indexing="ij")[::-1], dim=-1)
    coords = coords.unsqueeze(0).expand(grid.shape[0], h, w, 2)
    return F.grid_sample(grid, coords, mode="bilinear", padding_mode="border", align_corners=True)
