"""Synthetic Spectralis-like OCT B-scans with exact layer and fluid labels.

OCTSeg's embedded default dataset: every model, loss and metric can be exercised without a
download, and tests get real anatomical structure (ordered layers, a foveal pit, cysts that
displace the tissue around them) instead of random noise.

Each B-scan is a pure function of ``(seed, index)``. The label set is the one of the Duke DME
export (Chiu et al. 2015): 0 vitreous, 1 RNFL, 2 GCL+IPL, 3 INL, 4 OPL, 5 ONL+ISM, 6 ISE,
7 OS+RPE, 8 choroid/sclera, 9 fluid. In every column the labels 0..8 appear top to bottom, in
order, each at least one pixel thick; fluid (9) sits inside a layer whose tissue it pushes
apart, so the retina swells around a cyst as in diabetic macular edema.

Anatomy is built column-wise as 1-D arrays (layer thicknesses, Bruch's membrane row), the
label map from per-column run lengths, and the image by :mod:`octseg.data.synthetic_render`
with lookup tables and small matrix products, so a 496 x 512 scan takes a few milliseconds.

Example::

    image, labels = generate_bscan(seed=0, index=3)                # uint8 [496, 512] each
    scan = generate_bscan_with_info(0, 3, height=128, width=160)   # plus surfaces, fluid flag
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from octseg.data.base import InMemorySegDataset, SegDataModule
from octseg.data.synthetic_render import render_bscan, smooth_waves

__all__ = [
    "CLASS_NAMES",
    "FLUID_LABEL",
    "SyntheticBScan",
    "SyntheticStyle",
    "SyntheticDataModule",
    "generate_bscan",
    "generate_bscan_with_info",
    "measure_throughput",
]

log = logging.getLogger(__name__)

CLASS_NAMES = ("vitreous", "RNFL", "GCL+IPL", "INL", "OPL", "ONL+ISM", "ISE", "OS+RPE",
               "choroid", "fluid")  # fmt: skip
FLUID_LABEL = 9
MIN_HEIGHT, MIN_WIDTH = 48, 8

# Mean Duke DME thicknesses (px at 496 rows) of layers 1..7: RNFL .. OS+RPE.
_MEAN_THICKNESS = np.array([10.9, 17.5, 8.7, 7.5, 23.6, 8.5, 6.9])
# Foveal response of layers 1..7 (multiplies the pit profile): inner layers vanish at the pit,
# the OPL thins, the ONL (Henle fibres + nuclei) and the photoreceptors thicken.
_PIT_RESPONSE = np.array([-0.97, -0.95, -0.9, -0.55, 0.25, 0.15, 0.15])
# Fluid host layers and how often each hosts a cyst (DME cysts: mostly INL and ONL).
_CYST_HOSTS, _CYST_HOST_P = np.array([3, 5, 2, 4]), np.array([0.45, 0.4, 0.08, 0.07])
_TOP_MARGIN, _BOTTOM_MARGIN = 0.04, 0.12  # fractions of H kept above the ILM / below BM


@dataclass(frozen=True)
class SyntheticStyle:
    """Knobs of anatomy and appearance; the defaults mimic Heidelberg Spectralis DME scans.

    Args:
        pit_probability: chance that a scan crosses the fovea (otherwise no pit).
        mean_cysts: mean number of cysts in a scan with fluid (1 + Poisson(mean - 1)).
        max_cysts: upper bound on the number of cysts.
        vessels: (min, max) inner-retina vessels per 512 columns, each casting a shadow.
        speckle: strength of multiplicative, spatially correlated speckle (0 = none).
        noise_std: standard deviation of additive noise in grey levels.
    """

    pit_probability: float = 0.8
    mean_cysts: float = 6.0
    max_cysts: int = 16
    vessels: tuple[int, int] = (3, 10)
    speckle: float = 0.55
    noise_std: float = 9.0


@dataclass
class SyntheticBScan:
    """One generated B-scan with its ground truth.

    Attributes:
        image: uint8 ``[H, W]``.
        labels: uint8 ``[H, W]`` in 0..9.
        surfaces: int ``[8, W]``; ``surfaces[k]`` is the first row below surface k (ILM,
            RNFL-GCL, IPL-INL, INL-OPL, OPL-ONL, ISM-ISE, ISE-OS, RPE-BM), i.e. the first row
            of label ``k + 1`` (fluid counted as part of the layer it sits in).
        has_fluid: whether cysts were drawn.
    """

    image: np.ndarray
    labels: np.ndarray
    surfaces: np.ndarray
    has_fluid: bool


def _anatomy(rng: np.random.Generator, h: int, w: int, style: SyntheticStyle) -> dict[str, Any]:
    """Tissue thickness per layer and column ``[7, W]`` (float, no fluid), Bruch's membrane row
    ``[W]`` (float) and the foveal pit (centre column, width, depth in 0..1)."""
    u = (np.arange(w) + 0.5) / w - 0.5
    s = h / 496.0
    pit_depth = (
        rng.uniform(0.6, 1.0) if rng.random() < style.pit_probability else rng.uniform(0, 0.2)
    )
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
class _Cyst:
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


def _cysts(rng: np.random.Generator, h: int, w: int, pit: tuple[float, float, float],
           style: SyntheticStyle) -> list[_Cyst]:  # fmt: skip
    """Draws elliptic cysts of random size, mostly in the INL and ONL near the fovea.

    The host layer swells by the cyst's height where the cyst is and by smooth Gaussian
    shoulders around it, so the tissue above bulges into a dome as in macular edema.
    """
    n = min(style.max_cysts, 1 + rng.poisson(max(style.mean_cysts - 1, 0)))
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
        cysts.append(_Cyst(host, rng.uniform(0.15, 0.85), height, np.maximum(height, shoulders)))
    return cysts


def _layout(
    anatomy: dict[str, Any], cysts: list[_Cyst], h: int
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Rounds the anatomy to whole pixels and stacks it from Bruch's membrane upwards.

    Returns the surfaces ``[8, W]`` (first row of labels 1..8) and each cyst's
    ``(first row, height)`` per column. Cysts add their swelling to
    the host layer, so every surface above moves up: the tissue is displaced, not overwritten.
    Tissue scaling never depends on fluid, so a scan with and without fluid differ in each
    column by exactly the swelling there, which is at least the fluid it holds.
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
    ratio = np.minimum(1.0, room / np.maximum(swelling.sum(0), 1e-6))  # < 1: flatten to fit
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
    for cyst, px in zip(cysts, height_px):
        free[cyst.host - 1] -= px
    for i in np.argsort([c.rel_depth for c in cysts], kind="stable"):
        k = cysts[i].host - 1
        start = surfaces[k] + np.rint(cysts[i].rel_depth * free[k]).astype(np.int64) + fluid_px[k]
        placed.append((start, height_px[i]))
        fluid_px[k] += height_px[i]
    return surfaces, placed


def _label_map(
    surfaces: np.ndarray, placed: list[tuple[np.ndarray, np.ndarray]], h: int
) -> np.ndarray:
    """Label map from surfaces (run lengths of labels 0..8 down each column, expanded with
    ``np.repeat``: ~10x faster than one broadcast comparison per surface), then cysts."""
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


def _check_args(seed: int, index: int, height: int, width: int, fluid_probability: float) -> None:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}.")
    if height < MIN_HEIGHT or width < MIN_WIDTH:
        raise ValueError(
            f"A synthetic B-scan needs height >= {MIN_HEIGHT} and width >= {MIN_WIDTH} (nine "
            f"ordered labels), got {height} x {width}; raise dataset.datamodule.height/width."
        )
    if not 0.0 <= fluid_probability <= 1.0:
        raise ValueError(f"fluid_probability must lie in [0, 1], got {fluid_probability}.")


def generate_bscan_with_info(
    seed: int,
    index: int,
    height: int = 496,
    width: int = 512,
    fluid_probability: float = 0.6,
    healthy: bool = False,
    style: SyntheticStyle | None = None,
) -> SyntheticBScan:
    """Generates B-scan ``index`` of the synthetic set ``seed``, with its surfaces.

    Anatomy, fluid, appearance and noise use independent random streams derived from
    ``(seed, index)``: changing ``fluid_probability`` or ``healthy`` only adds or removes the
    cysts (and the swelling they cause), the rest of the scan stays identical.

    Args:
        seed: data-set seed (>= 0).
        index: scan number within the set (>= 0).
        height: rows (axial); thicknesses scale with it. At least 48.
        width: columns (lateral); lateral features scale with it. At least 8.
        fluid_probability: fraction of scans with intraretinal cysts (a scan has fluid when
            its own uniform draw falls below it, so raising it only adds fluid).
        healthy: never draw fluid (normal retinas, e.g. for anomaly detection).
        style: anatomy/appearance knobs; defaults to :class:`SyntheticStyle`.

    Returns:
        A :class:`SyntheticBScan` (uint8 image and labels ``[height, width]``, surfaces, flag).

    Raises:
        ValueError: on a negative seed/index, a too small size or a probability outside [0, 1].
    """
    _check_args(seed, index, height, width, fluid_probability)
    style = style or SyntheticStyle()
    geo_rng, fluid_rng, look_rng, noise_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence([seed, index]).spawn(4)
    )
    anatomy = _anatomy(geo_rng, height, width, style)
    has_fluid = (fluid_rng.random() < fluid_probability) and not healthy
    cysts = _cysts(fluid_rng, height, width, anatomy["pit"], style) if has_fluid else []
    surfaces, placed = _layout(anatomy, cysts, height)
    labels = _label_map(surfaces, placed, height)
    has_fluid = bool(has_fluid and (labels == FLUID_LABEL).any())
    image = render_bscan(look_rng, noise_rng, labels, surfaces, anatomy["pit"], has_fluid,
                         style.speckle, style.noise_std, style.vessels)  # fmt: skip
    return SyntheticBScan(image=image, labels=labels, surfaces=surfaces, has_fluid=has_fluid)


def generate_bscan(
    seed: int,
    index: int,
    height: int = 496,
    width: int = 512,
    fluid_probability: float = 0.6,
    healthy: bool = False,
    style: SyntheticStyle | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generates one synthetic B-scan; see :func:`generate_bscan_with_info` for the arguments.

    Returns:
        ``(image, labels)``: uint8 arrays ``[height, width]``, labels in 0..9 (Duke DME set).
    """
    scan = generate_bscan_with_info(seed, index, height, width, fluid_probability, healthy, style)
    return scan.image, scan.labels


def measure_throughput(n: int = 200, height: int = 496, width: int = 512) -> float:
    """B-scans generated per second on one thread of this process (fluid_probability 0.6).

    BLAS and OpenCV are limited to one thread while timing, so the figure is per core; run
    it pinned (``taskset -c 0``) on an otherwise idle machine for a clean number.

    Args:
        n: number of scans to time (after one warm-up scan).
        height: rows per scan.
        width: columns per scan.

    Returns:
        Scans per second (wall clock).
    """
    import cv2
    from threadpoolctl import threadpool_limits

    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(limits=1):
            generate_bscan(0, 0, height, width)  # warm up caches (upsampling matrices)
            start = time.perf_counter()
            for i in range(n):
                generate_bscan(0, i + 1, height, width)
            elapsed = time.perf_counter() - start
    finally:
        cv2.setNumThreads(cv2_threads)
    return n / elapsed


class SyntheticDataModule(SegDataModule):
    """Synthetic B-scans generated once in :meth:`build_datasets` and kept in memory.

    Splits use disjoint scan indices (train ``[0, num_train)``, then val, then test) and
    disjoint volumes: every ``scans_per_volume`` consecutive scans of a split form one volume
    (``synth_v000``, ...), numbered on across splits, so per-volume metrics are exercised.

    Args:
        num_train: training scans.
        num_val: validation scans.
        num_test: test scans (also used for prediction).
        height: rows per scan.
        width: columns per scan.
        seed: data-set seed; the same seed gives the same scans.
        fluid_probability: fraction of scans with cysts.
        healthy: no fluid at all.
        scans_per_volume: scans grouped under one ``volume_id``.
        train_transform: albumentations-style ``transform(image=..., mask=...)`` for training
            samples only, or None.
        mean: intensity mean (of images scaled to [0, 1]) subtracted before the network.
        std: intensity standard deviation divided by.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (defaults to ``batch_size``).
        num_workers: DataLoader workers.
        ignore_index: mask value for padded pixels.
        pin_memory: pin host memory.

    Raises:
        ValueError: on negative split sizes, ``scans_per_volume < 1`` or invalid generator
            arguments.
    """

    def __init__(
        self,
        num_train: int = 64,
        num_val: int = 16,
        num_test: int = 16,
        height: int = 496,
        width: int = 512,
        seed: int = 0,
        fluid_probability: float = 0.6,
        healthy: bool = False,
        scans_per_volume: int = 8,
        train_transform: Callable[..., dict[str, Any]] | None = None,
        mean: float = 0.152,
        std: float = 0.141,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        ignore_index: int = 255,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, ignore_index, pin_memory)
        if min(num_train, num_val, num_test) < 0 or scans_per_volume < 1:
            raise ValueError(
                f"Need num_train/num_val/num_test >= 0 and scans_per_volume >= 1, got "
                f"{num_train}/{num_val}/{num_test} and {scans_per_volume} "
                "(dataset.datamodule in conf/dataset/synthetic.yaml)."
            )
        _check_args(seed, 0, height, width, fluid_probability)
        self.split_sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.height, self.width, self.seed = height, width, seed
        self.fluid_probability, self.healthy = fluid_probability, healthy
        self.scans_per_volume = scans_per_volume
        self.train_transform = train_transform
        self.mean, self.std = mean, std

    def build_datasets(self) -> dict[str, InMemorySegDataset]:
        """Generates every split (a few ms per scan) and wraps each in an in-memory dataset."""
        datasets, first_index, first_volume = {}, 0, 0
        for split, size in self.split_sizes.items():
            args = (self.height, self.width, self.fluid_probability, self.healthy)
            scans = [generate_bscan(self.seed, first_index + i, *args) for i in range(size)]
            volumes = [
                f"synth_v{first_volume + i // self.scans_per_volume:03d}" for i in range(size)
            ]
            datasets[split] = InMemorySegDataset(
                images=[image for image, _ in scans],
                masks=[labels for _, labels in scans],
                case_ids=[f"synth_{first_index + i:05d}" for i in range(size)],
                volume_ids=volumes,
                transform=self.train_transform if split == "train" else None,
                mean=self.mean,
                std=self.std,
            )
            first_index += size
            first_volume += -(-size // self.scans_per_volume)
        log.info(
            "Generated synthetic OCT splits %s at %dx%d <dataset.datamodule.seed=%d>",
            self.split_sizes, self.height, self.width, self.seed,
        )  # fmt: skip
        return datasets
