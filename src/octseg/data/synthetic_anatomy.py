"""Anatomy of the synthetic B-scans (see :mod:`octseg.data.synthetic`): layer thicknesses,
Bruch's membrane, the foveal pit, cysts and the swelling they cause, and the label map.

Everything is built column-wise as 1-D arrays; the label map is expanded from per-column run
lengths. Labels follow Duke DME: 0 vitreous, 1 RNFL, 2 GCL+IPL, 3 INL, 4 OPL, 5 ONL+ISM, 6 ISE,
7 OS+RPE, 8 choroid/sclera, 9 fluid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from octseg.data.synthetic_render import smooth_waves

__all__ = ["FLUID_LABEL", "Cyst", "draw_anatomy", "draw_cysts", "label_map", "layout_surfaces"]

FLUID_LABEL = 9
# Mean Duke DME thicknesses (px at 496 rows) of layers 1..7: RNFL .. OS+RPE.
_MEAN_THICKNESS = np.array([10.9, 17.5, 8.7, 7.5, 23.6, 8.5, 6.9])
# Foveal response of layers 1..7 (multiplies the pit profile): inner layers vanish at the pit,
# the OPL thins, the ONL (Henle fibres + nuclei) and the photoreceptors thicken.
_PIT_RESPONSE = np.array([-0.97, -0.95, -0.9, -0.55, 0.25, 0.15, 0.15])
# Fluid host layers and how often each hosts a cyst (DME cysts: mostly INL and ONL).
_CYST_HOSTS, _CYST_HOST_P = np.array([3, 5, 2, 4]), np.array([0.45, 0.4, 0.08, 0.07])
_TOP_MARGIN, _BOTTOM_MARGIN = 0.04, 0.12  # fractions of H kept above the ILM / below BM


def draw_anatomy(
    rng: np.random.Generator, h: int, w: int, pit_probability: float
) -> dict[str, Any]:
    """Draws a retina without fluid.

    Args:
        rng: anatomy random stream.
        h: image rows; thicknesses scale with ``h / 496``.
        w: image columns.
        pit_probability: chance that the scan crosses the fovea.

    Returns:
        ``{"thickness": [7, W] float rows of layers 1..7, "bm": [W] float row of Bruch's
        membrane, "pit": (centre column, width, depth 0..1)}``.
    """
    u = (np.arange(w) + 0.5) / w - 0.5
    s = h / 496.0
    pit_depth = rng.uniform(0.6, 1.0) if rng.random() < pit_probability else rng.uniform(0, 0.2)
    pit_x = rng.uniform(0.25, 0.75) * w
    pit_sigma = rng.uniform(0.045, 0.085) * w
    dist = (np.arange(w) - pit_x) / pit_sigma
    pit = np.exp(-0.5 * dist**2)
    ring = np.exp(-0.5 * ((np.abs(dist) - 2.2) / 1.2) ** 2)  # parafoveal GCL/INL crest
    nasal = rng.choice([-1.0, 1.0]) * (np.arange(w) - pit_x) / w  # RNFL thickens nasally
    thickness = _MEAN_THICKNESS[:, None] * s * rng.uniform(0.85, 1.15)
    thickness = thickness * (1 + pit_depth * _PIT_RESPONSE[:, None] * pit[None, :])
    thickness[0] *= np.clip(1 + 1.4 * nasal, 0.4, None)
    thickness[1:3] *= 1 + 0.6 * pit_depth * ring
    for k in range(7):
        thickness[k] *= 1 + rng.uniform(0.05, 0.15) * smooth_waves(rng, u, 3, 3.0)
    base, tilt, curv = rng.uniform(0.45, 0.62), rng.uniform(-0.1, 0.1), rng.uniform(-0.04, 0.08)
    bm = h * (
        base + tilt * 2 * u + curv * (1 / 3 - 4 * u**2) + 0.012 * smooth_waves(rng, u, 4, 4.0)
    )
    return {
        "thickness": np.maximum(thickness, 0.5),
        "bm": bm,
        "pit": (pit_x, pit_sigma, pit_depth),
    }


@dataclass
class Cyst:
    """A cyst inside layer ``host``: its own height per column and the (wider, smooth) swelling
    of the host layer around it, ``shoulders >= height`` everywhere."""

    host: int
    rel_depth: float  # where in the host tissue it sits, 0 (top) .. 1 (bottom)
    height: np.ndarray  # [W] float rows
    shoulders: np.ndarray  # [W] float rows, >= height


def _dome_spread(height: np.ndarray | float, h: int, w: int) -> np.ndarray | float:
    """Lateral standard deviation (columns) of the bulge over fluid ``height`` rows tall: the
    tissue above is lifted over a span ~1.5x the fluid's half-height in micrometres."""
    return np.maximum(0.75 * np.asarray(height) * (w / 512) / (h / 496), 0.02 * w)


def _dome(stacked: np.ndarray, h: int) -> np.ndarray:
    """Upper envelope of Gaussians centred on every fluid column, each as tall as the fluid
    there and as wide as :func:`_dome_spread`: a smooth dome that is never below ``stacked``."""
    w = stacked.shape[0]
    cols = np.flatnonzero(stacked > 0)
    spread = _dome_spread(stacked[cols], h, w)
    offsets = (np.arange(w)[None, :] - cols[:, None]) / spread[:, None]
    return (stacked[cols, None] * np.exp(-0.5 * offsets**2)).max(0)


def draw_cysts(
    rng: np.random.Generator,
    h: int,
    w: int,
    pit: tuple[float, float, float],
    mean_cysts: float,
    max_cysts: int,
) -> list[Cyst]:
    """Draws elliptic cysts of random size, mostly in the INL and ONL near the fovea.

    The host layer swells by the cyst's height where the cyst is and by smooth Gaussian
    shoulders around it, so the tissue above bulges into a dome as in macular edema.

    Args:
        rng: fluid random stream.
        h: image rows.
        w: image columns.
        pit: the foveal pit from :func:`draw_anatomy`; 70 % of cysts cluster around it.
        mean_cysts: mean number of cysts (1 + Poisson(mean - 1)).
        max_cysts: upper bound on the number of cysts.

    Returns:
        The cysts, in drawing order.
    """
    n = min(max_cysts, 1 + rng.poisson(max(mean_cysts - 1, 0)))
    cols = np.arange(w)
    cysts = []
    for _ in range(n):
        a_frac = np.exp(rng.uniform(np.log(0.006), np.log(0.07)))  # lateral semi-axis / W
        a = a_frac * w
        # Axial semi-axis in rows; physically round cysts look ~3x taller than wide in
        # pixels (3.87 vs 11.3 um/px), flattened ones less so.
        b = min(a_frac * 512 * rng.uniform(0.6, 2.2) * h / 496, 0.09 * h)
        centre = pit[0] + rng.normal(0, 2.5 * pit[1]) if rng.random() < 0.7 else rng.uniform(0, w)
        x = (cols - centre) / a
        wobble = 1 + 0.12 * smooth_waves(rng, x / 4, 2, 2.0)  # slightly irregular walls
        height = 2 * b * np.sqrt(np.clip(1 - x**2, 0, None)) * wobble
        # Host swelling: the cyst itself plus smooth shoulders, wider for tall cysts (the
        # tissue above is lifted over a lateral span comparable to the cyst's height in um).
        # A Gaussian of the peak height and sd >= a is never below the ellipse.
        spread = max(1.2 * a, float(_dome_spread(2 * b, h, w))) * rng.uniform(1, 1.3)
        shoulders = 2.24 * b * np.exp(-0.5 * ((cols - centre) / spread) ** 2)
        host = int(rng.choice(_CYST_HOSTS, p=_CYST_HOST_P))
        cysts.append(Cyst(host, rng.uniform(0.15, 0.85), height, np.maximum(height, shoulders)))
    return cysts


def layout_surfaces(
    anatomy: dict[str, Any], cysts: list[Cyst], h: int
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Rounds the anatomy to whole pixels and stacks it from Bruch's membrane upwards.

    Cysts add their swelling to the host layer, so every surface above moves up: the tissue is
    displaced, not overwritten. Tissue scaling never depends on fluid, so a scan with and
    without fluid differ in each column by exactly the swelling there, which is at least the
    fluid it holds. Every layer keeps at least one tissue row in every column.

    Args:
        anatomy: output of :func:`draw_anatomy`.
        cysts: output of :func:`draw_cysts` (empty for no fluid).
        h: image rows (at least 48).

    Returns:
        The surfaces ``[8, W]`` (int, first row of labels 1..8) and, per cyst, its first row
        and height ``[W]`` in each column.
    """
    top, bottom = max(1, round(_TOP_MARGIN * h)), max(1, round(_BOTTOM_MARGIN * h))
    budget = h - top - bottom - 1
    tissue = anatomy["thickness"]
    tissue_max = float(tissue.sum(0).max())
    if tissue_max > 0.7 * budget:  # leave room for cysts; only very tilted or tiny scans
        tissue = tissue * (0.7 * budget / tissue_max)
    tissue_px = np.maximum(1, np.rint(tissue)).astype(np.int64)
    # Each host layer swells by the smooth shoulders of its cysts; where cysts stack in one
    # column (their heights add up), by a dome over the stack instead of a spike.
    swelling = np.zeros_like(tissue)
    stacked = np.zeros_like(tissue)
    for cyst in cysts:
        stacked[cyst.host - 1] += cyst.height
        swelling[cyst.host - 1] = np.maximum(swelling[cyst.host - 1], cyst.shoulders)
    for k in np.flatnonzero((stacked > swelling).any(1)):
        swelling[k] = np.maximum(swelling[k], _dome(stacked[k], h))
    room = budget - tissue_px.sum(0)
    ratio = np.clip(room / np.maximum(swelling.sum(0), 1e-6), 0.0, 1.0)  # < 1: flatten to fit
    height_px = [np.floor(c.height * ratio).astype(np.int64) for c in cysts]
    layer_px = tissue_px + np.floor(swelling * ratio).astype(np.int64)
    thickness = layer_px.sum(0)
    bm = np.rint(anatomy["bm"]).astype(np.int64)
    lower, upper = top + thickness, h - 1 - bottom
    down, up = max(0, int((lower - bm).max())), max(0, int((bm - upper).max()))
    bm = np.clip(bm + (down if not up else -up if not down else 0), lower, upper)
    surfaces = bm[None, :] - np.cumsum(layer_px[::-1], axis=0)[::-1]
    surfaces = np.concatenate([surfaces, bm[None, :]])  # row 0: ILM .. row 7: BM
    # Cysts of a layer stack top to bottom in order of relative depth; the layer's non-fluid
    # rows (>= its tissue) are spread before, between and after them.
    placed = []
    fluid_px = np.zeros_like(layer_px)  # cyst rows already stacked in each layer
    free = layer_px.copy()  # non-fluid rows of each layer
    for cyst, px in zip(cysts, height_px, strict=False):
        free[cyst.host - 1] -= px
    for i in np.argsort([c.rel_depth for c in cysts], kind="stable"):
        k = cysts[i].host - 1
        start = surfaces[k] + np.rint(cysts[i].rel_depth * free[k]).astype(np.int64) + fluid_px[k]
        placed.append((start, height_px[i]))
        fluid_px[k] += height_px[i]
    return surfaces, placed


def label_map(
    surfaces: np.ndarray, placed: list[tuple[np.ndarray, np.ndarray]], h: int
) -> np.ndarray:
    """Rasterises surfaces and cysts into a label map.

    Labels 0..8 are run lengths down each column expanded with ``np.repeat`` (~10x faster than
    one broadcast comparison per surface); cyst rows are then set to :data:`FLUID_LABEL`.

    Args:
        surfaces: int ``[8, W]`` from :func:`layout_surfaces`.
        placed: per cyst, first row and height ``[W]``.
        h: image rows.

    Returns:
        uint8 labels ``[h, W]``.
    """
    w = surfaces.shape[1]
    edges = np.concatenate([np.zeros((1, w), np.int64), surfaces, np.full((1, w), h)])
    runs = np.diff(edges, axis=0).T.ravel()  # column-major run lengths, all >= 1
    column_major = np.repeat(np.tile(np.arange(9, dtype=np.uint8), w), runs)
    labels = np.ascontiguousarray(column_major.reshape(w, h).T)
    for start, height in placed:
        cols = np.flatnonzero(height)
        if cols.size:
            c0, c1 = cols[0], cols[-1] + 1
            r0, r1 = int(start[c0:c1].min()), int((start + height)[c0:c1].max())
            band = np.arange(r0, r1)[:, None]
            inside = (band >= start[None, c0:c1]) & (band < (start + height)[None, c0:c1])
            labels[r0:r1, c0:c1][inside] = FLUID_LABEL
    return labels
