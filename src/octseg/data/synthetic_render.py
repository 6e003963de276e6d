"""Image formation of the synthetic B-scans (see :mod:`octseg.data.synthetic`).

Turns a label map and its surfaces into a Spectralis-like uint8 intensity image: per-label
reflectivity with sub-layer bands (ILM reflex, ELM, dim outer segments), a textured choroid
fading with depth, inner-retina vessels and their shadows, an axial point-spread blur, then
correlated multiplicative speckle and a log-compressed noise floor. Pure numpy plus
``cv2.LUT`` (OpenCV ships with albumentations).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

__all__ = ["REFLECTIVITY", "render_bscan", "smooth_waves"]

# Mean display intensity (0..255, before gain, speckle and noise) of labels 0..9.
REFLECTIVITY = np.array([30, 145, 100, 74, 95, 54, 135, 175, 0, 34], dtype=np.float32)
# 256 quantiles of Exp(1) and of log Exp(1) (standardised), for table-lookup sampling.
_EXPONENTIAL_QUANTILES = -np.log1p(-(np.arange(256, dtype=np.float32) + 0.5) / 256)
_LOG_EXPONENTIAL_QUANTILES = np.log(_EXPONENTIAL_QUANTILES)
_LOG_EXPONENTIAL_QUANTILES = (
    (_LOG_EXPONENTIAL_QUANTILES - _LOG_EXPONENTIAL_QUANTILES.mean())
    / _LOG_EXPONENTIAL_QUANTILES.std()
).astype(np.float32)


def smooth_waves(rng: np.random.Generator, u: np.ndarray, n: int, max_freq: float) -> np.ndarray:
    """Smooth random curve over ``u`` in [-0.5, 0.5): a sum of ``n`` sinusoids with 1/f
    amplitudes, scaled to a maximum magnitude of 1 (cheaper than filtering white noise)."""
    freq = rng.uniform(0.3, max_freq, n)
    amp = rng.normal(size=n) / freq
    y = (
        amp[:, None]
        * np.sin(2 * np.pi * freq[:, None] * u + rng.uniform(0, 2 * np.pi, n)[:, None])
    ).sum(0)
    return y / max(float(np.abs(y).max()), 1e-6)


@functools.lru_cache(maxsize=32)
def _upsampler(n_out: int, n_in: int) -> np.ndarray:
    """``[n_out, n_in]`` matrix that resamples a coarse grid smoothly (Gaussian weights), so a
    smooth 2-D texture is two small matrix products instead of a convolution. Cached per size;
    callers must not modify it."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    w = np.exp(-0.5 * ((centres[:, None] - np.arange(n_in)[None, :]) / 0.8) ** 2)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def render_bscan(
    rng: np.random.Generator,
    noise_rng: np.random.Generator,
    labels: np.ndarray,
    surfaces: np.ndarray,
    pit: tuple[float, float, float],
    has_fluid: bool,
    speckle: float = 0.55,
    noise_std: float = 9.0,
    vessels: tuple[int, int] = (3, 10),
) -> np.ndarray:
    """Renders the intensity image of a label map.

    Args:
        rng: appearance stream (reflectivity jitter, choroid texture, vessels, foci).
        noise_rng: noise stream (speckle and noise floor).
        labels: uint8 ``[H, W]`` in 0..9.
        surfaces: int ``[8, W]``, first row of labels 1..8 in each column.
        pit: foveal pit ``(centre column, width, depth 0..1)``; no vessels inside it.
        has_fluid: adds hyperreflective foci, as seen around DME cysts.
        speckle: strength of the multiplicative speckle (0 = none).
        noise_std: standard deviation of the additive noise floor, grey levels.
        vessels: (min, max) inner-retina vessels per 512 columns.

    Returns:
        uint8 image ``[H, W]``.
    """
    h, w = labels.shape
    s = h / 496.0
    cols = np.arange(w)
    lut = np.zeros(256, np.float32)
    lut[:10] = REFLECTIVITY * rng.uniform(0.88, 1.12, 10)
    img = cv2.LUT(labels, lut)  # uint8 -> float32 lookup, ~3x faster than np.take
    img[surfaces[0], cols] += 30  # ILM reflex
    elm = surfaces[5] - max(1, round(4 * s))  # external limiting membrane, inside ONL+ISM
    ok = (elm > surfaces[4]) & (labels[np.clip(elm, 0, h - 1), cols] == 5)
    img[elm[ok], cols[ok]] += 40
    for d in range(max(1, round(2 * s))):  # dim outer segments between the EZ and the RPE
        row = surfaces[6] + d
        ok = row < surfaces[7] - 1
        img[row[ok], cols[ok]] *= 0.55
    # Choroid: a bright, textured choriocapillaris/vessel layer (dark lumens, bright stroma)
    # fading fast, over a dim sclera fading slowly (exponentials fitted by eye to Spectralis
    # scans). exp(-(r - bm[c]) / L) = exp(-r / L) * exp(bm[c] / L) is separable, so the
    # depth profiles fold into the texture's upsampling matrices: the whole choroid is one
    # small matrix product, ``[rows, ch + 1] @ [ch + 1, W]`` (the extra rank carries the sclera).
    r0 = int(surfaces[7].min())
    rows = np.arange(r0, h, dtype=np.float32)[:, None] / s
    bm = surfaces[7].astype(np.float32)[None, :] / s
    ch, cw = max(4, h // 10), max(4, w // 10)
    coarse = np.exp(2.4 * np.tanh(1.5 * rng.standard_normal((ch, cw)))).astype(np.float32)
    left = np.concatenate([_upsampler(h, ch)[r0:] * np.exp(-rows / 26), np.exp(-rows / 150)], 1)
    right = np.concatenate([
        (coarse @ _upsampler(w, cw).T) * (52 * rng.uniform(0.25, 0.45) * np.exp(bm / 26)),
        36 * rng.uniform(0.7, 1.2) * np.exp(bm / 150),
    ])  # fmt: skip
    np.copyto(img[r0:], left @ right, where=labels[r0:] == 8)
    # Inner-retina vessels: a bright cross-section near the RNFL-GCL border and a shadow below.
    n_vessels = round(rng.integers(vessels[0], vessels[1] + 1) * w / 512)
    pit_x, pit_sigma, pit_depth = pit
    for _ in range(n_vessels):
        xv = rng.uniform(0, w)
        if pit_depth > 0.3 and abs(xv - pit_x) < 1.3 * pit_sigma:
            continue  # foveal avascular zone
        half = rng.uniform(1.5, 4.0) * w / 512
        c0, c1 = max(0, int(xv - 3 * half)), min(w, int(xv + 3 * half) + 1)
        att = 1 - rng.uniform(0.3, 0.65) * np.exp(-0.5 * ((cols[c0:c1] - xv) / half) ** 2)
        centre = int(surfaces[1][min(int(xv), w - 1)])
        radius = max(1, round(half * 1.5 * s))
        top, bottom = max(0, centre - radius), min(h, centre + radius)
        img[top:bottom, c0:c1] += 35 * (1 - att[None, :]) / 0.65
        img[bottom:, c0:c1] *= att[None, :].astype(np.float32)
    if has_fluid:  # hyperreflective foci, common around DME cysts
        for _ in range(rng.integers(2, 16)):
            c = int(rng.integers(0, w - 1))
            r = int(rng.integers(surfaces[1][c], max(surfaces[1][c] + 1, surfaces[5][c])))
            img[r : r + 2, c : c + 2] = np.maximum(
                img[r : r + 2, c : c + 2], rng.uniform(120, 200)
            )
    u = (cols + 0.5) / w - 0.5
    gain = rng.uniform(0.85, 1.1) * (1 + 0.1 * smooth_waves(rng, u, 2, 2.0))  # per A-scan
    img *= gain.astype(np.float32)[None, :]
    # Axial point-spread function [1, 2, 1] / 4. From here on, operations write into existing
    # buffers where they can, to limit memory traffic (the generator is memory-bound).
    blurred = img * np.float32(0.5)
    img *= np.float32(0.25)
    blurred[1:] += img[:-1]
    blurred[:-1] += img[1:]
    # Speckle: exponential intensities summed over 3 x 2 px (gamma-like, and correlated like
    # Spectralis speckle grains: ~0.67 axially, ~0.5 laterally). Noise floor after log
    # compression: log of an exponential (long dark tail). Both are drawn as uint8 indices into
    # 256-quantile tables (3x faster than numpy's exponential sampler), the tables prescaled
    # so that the six summed values give the speckle factor ``1 + speckle * (mean6 - 1)``.
    draws = noise_rng.integers(0, 256, (2, h + 2, w + 1), dtype=np.uint8)
    speckle_table = (speckle * _EXPONENTIAL_QUANTILES + (1 - speckle)) / 6
    e = cv2.LUT(draws[0], speckle_table.astype(np.float32))
    column_sum = e[:-2] + e[1:-1]
    column_sum += e[2:]
    np.add(column_sum[:, :-1], column_sum[:, 1:], out=img)
    blurred *= img
    blurred += cv2.LUT(draws[1, :h, :w], np.float32(noise_std) * _LOG_EXPONENTIAL_QUANTILES)
    return np.clip(blurred, 0, 255, out=blurred).astype(np.uint8)
