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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from octseg.data.base import BScanRecord, SegDataModule
from octseg.data.synthetic_anatomy import (
    FLUID_LABEL,
    draw_anatomy,
    draw_cysts,
    label_map,
    layout_surfaces,
)
from octseg.data.synthetic_render import render_bscan

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
MIN_HEIGHT, MIN_WIDTH = 48, 8


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
    anatomy = draw_anatomy(geo_rng, height, width, style.pit_probability)
    has_fluid = (fluid_rng.random() < fluid_probability) and not healthy
    cysts = []
    if has_fluid:
        cysts = draw_cysts(
            fluid_rng, height, width, anatomy["pit"], style.mean_cysts, style.max_cysts
        )
    surfaces, placed = layout_surfaces(anatomy, cysts, height)
    labels = label_map(surfaces, placed, height)
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


def _style_from(overrides: Mapping[str, Any] | None) -> SyntheticStyle:
    """A :class:`SyntheticStyle` from a (Hydra) mapping of field overrides."""
    known = {f.name for f in fields(SyntheticStyle)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"Unknown synthetic style field(s) {unknown} in dataset.datamodule.style; "
            f"expected some of {sorted(known)}."
        )
    if "vessels" in overrides:  # Hydra gives lists
        overrides["vessels"] = tuple(overrides["vessels"])
    return SyntheticStyle(**overrides)


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
        style: overrides of :class:`SyntheticStyle` fields (anatomy and appearance knobs),
            e.g. ``{"speckle": 0.3, "mean_cysts": 2}``, or None for the defaults.
        train_transform: albumentations-style ``transform(image=..., mask=...)`` for training
            samples only, or None.
        mean: intensity mean (of images scaled to [0, 1]) subtracted before the network.
        std: intensity standard deviation divided by.
        spacing_um: ``[axial, lateral]`` micrometres per pixel carried by every sample, or None.
        bscan_spacing_um: micrometres between the B-scans of a volume, or None (unknown).
        train_repeats: passes over the training scans per epoch.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (None: ``batch_size``).
        num_workers: DataLoader workers.
        ignore_index: mask value for padded pixels.
        pin_memory: pin host memory.
        **kwargs: further :class:`~octseg.data.base.SegDataModule` arguments (e.g.
            ``labelled_fraction``, ``unlabelled``, ``labelled_seed``).

    Raises:
        ValueError: on negative split sizes, ``scans_per_volume < 1``, an unknown ``style``
            field or invalid generator arguments.
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
        style: Mapping[str, Any] | None = None,
        train_transform: Callable[..., dict[str, Any]] | None = None,
        mean: float = 0.152,
        std: float = 0.141,
        spacing_um: Sequence[float] | None = None,
        bscan_spacing_um: float | None = None,
        train_repeats: int = 1,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        ignore_index: int = 255,
        pin_memory: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            batch_size, eval_batch_size, num_workers, ignore_index, pin_memory,
            train_transform=train_transform, mean=mean, std=std, train_repeats=train_repeats,
            spacing_um=spacing_um, bscan_spacing_um=bscan_spacing_um, **kwargs,
        )  # fmt: skip
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
        self.style = _style_from(style)

    def describe_source(self) -> str:
        return f"synthetic scans (seed {self.seed}, {self.height}x{self.width})"

    def split_records(self, headers_only: bool = False) -> dict[str, list[BScanRecord]]:
        """Generates every split (a few ms per scan; pixels whatever ``headers_only``)."""
        parts, first_index, first_volume = {}, 0, 0
        args = (self.height, self.width, self.fluid_probability, self.healthy, self.style)
        for split, size in self.split_sizes.items():
            records = []
            for i in range(size):
                image, labels = generate_bscan(self.seed, first_index + i, *args)
                volume = f"synth_v{first_volume + i // self.scans_per_volume:03d}"
                records.append(BScanRecord(image, labels, f"synth_{first_index + i:05d}", volume,
                                           bscan_index=i % self.scans_per_volume))  # fmt: skip
            parts[split] = records
            first_index += size
            first_volume += -(-size // self.scans_per_volume)
        log.info(
            "Generated synthetic OCT splits %s at %dx%d <dataset.datamodule.seed=%d>",
            self.split_sizes, self.height, self.width, self.seed,
        )  # fmt: skip
        return parts
