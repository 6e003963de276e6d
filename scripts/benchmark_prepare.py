"""Speed and memory of dataset preparation, and of training on what it wrote.

    python scripts/benchmark_prepare.py                          # every dataset, full size
    python scripts/benchmark_prepare.py --datasets hcms,retouch --json
    python scripts/benchmark_prepare.py --scale 0.1 --steps 2    # a quick check of the script

For each dataset, a generated release of two full-size volumes (two subjects or eyes) in the
official format is written into a temporary folder (the writers below, with the file writers of
the tests, ``tests/data/*_fixtures.py``). The ``.mat`` files of the MATLAB releases (Duke,
OCTA-500, UMN) are MATLAB v5 compressed as MATLAB's default save writes them (HC-MS's small
delineation files are not compressed):

  duke           Subject_XX.mat: images 496 x 768 x 61 (uint8), manualLayers1/2 8 x 768 x 61
                 and manualFluid1/2 (double, NaN untraced), 11 traced B-scans
  hcms           Spectralis .vol of 49 x 496 x 1024 (float32) + delineation .mat (bd_pts)
  retouch        Cirrus oct/reference .mhd + .raw of 128 x 1024 x 512 (uint8)
  aroi           one patient's 47 annotated B-scans of 1024 x 512 (palette PNG) + label PNGs
  goals          one eye = one 800 x 1100 B-scan: Image, Layer_Masks (0/80/160/255) and
                 Layer_show PNGs + Train_GC_GT.xlsx
  oimhs          31 composite PNGs of 512 x 1024 (B-scan | RGB label map) per eye + CSVs
  octa500        6 mm: 400 BMPs of 640 x 400 per eye + GT_Layers .mat ('Layer' 6 x 400 x 400)
  umn_dme/_amd   one .mat of AllSubjects / ManualFluid1/2 cells of 496 x 1024 x 25 (uint8)
  duke_rpedc     A2A .mat: images 512 x 1000 x 100 (uint8) + layerMaps 100 x 1000 x 3,
                 NaN outside the 5 mm traced disc
  duke_chiu2012  Group<g>_Volume<v>.mat: images 512 x 1000 x 100 + manualLayers1/2
                 3 x 1000 x 100 (11 traced B-scans) + automaticLayers
  aichallenger   Cirrus cube of 128 BMPs of 1024 x 512 + label BMPs (0/255/191/128)
  kermany        one patient's 23 JPEGs of 496 x 512 in train/<CLASS>/ (volume = patient)
  oct_c8         one JPEG of 496 x 512 in train/<CLASS>/ (volume = image)
  octid          one JPEG of 512 x 1024 in <CLASS>/ (volume = image)

``scripts/prepare_<name>.py`` then runs in a fresh process on the first volume alone, and
again on both. Figures per dataset:

  s_per_volume, cpu_s_per_volume   preparation time of the two-volume run / 2 (wall, CPU),
                                   imports excluded (the one_volume / two_volumes entries
                                   hold each run's import and preparation figures)
  peak_rss_mib                     the process's peak resident set (VmHWM) after its imports,
                                   with one volume and with two: equal peaks for one and two
                                   volumes mean memory is bounded by one volume, not the dataset
  loading_vs_preloaded_ratio       scripts/benchmark.py's figure, training on the prepared
                                   two volumes through the dataset's own DataModule with
                                   the default augmentation (light_crop, 496 x 128 crops);
                                   null for image-level sets (kermany, oct_c8, octid: no
                                   masks to train a segmentation network on), with
                                   loading_ratio_reason saying so

``--scale`` shrinks every dimension of the volumes and the crop (e.g. 0.1 for the test), except
sizes a parser requires (OIMHS's 512-column halves); a dimension never shrinks below 32 pixels
or 2 B-scans, nor grows (one-image volumes stay one image).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
from PIL import Image

# The release writers live with the tests they serve (tests/data/): one writer per format.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmark import loading_vs_preloaded  # noqa: E402  (scripts/benchmark.py)
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from octseg.utils.config import compose  # noqa: E402
from tests.data.prepared_run import write_split  # noqa: E402
from tests.data.release_fixtures import write_mhd, write_png  # noqa: E402
from tests.data.vol_fixtures import write_vol  # noqa: E402

__all__ = ["DATASETS", "benchmark_dataset", "layered_volume", "main", "run_prepare_measured"]

MIB = 1024.0
CROP = (496, 128)  # conf/augmentation/light_crop.yaml, the default of train.py
Shape = tuple[int, int, int]  # B-scans, rows, columns


@dataclass(frozen=True)
class _Dataset:
    """How to write a two-volume release of one dataset and which volumes it holds."""

    shape: Shape  # full size of one volume: B-scans, rows, columns
    release: str  # the release format, for the report
    volume_ids: tuple[str, str]  # the prepared volume ids
    write: Callable[[Path, Shape], Path]  # (folder, shape) -> release root
    # A path fragment that only the second volume's files hold (default: its id); the
    # one-volume release is the two-volume one without them.
    marker: str = ""
    # Writes the first volume alone, for releases that keep every volume in one file (UMN).
    write_first: Callable[[Path, Shape], Path] | None = None
    fixed_axes: tuple[int, ...] = ()  # axes --scale leaves alone: sizes the parser requires
    # Arguments that make the script prepare only the first ``count`` volumes (Duke DME
    # refuses a release without its ten subjects unless told which to prepare).
    script_args: Callable[[int], list[str]] | None = None


def layered_volume(
    shape: tuple[int, int, int], n_surfaces: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A retina-like generated volume: smooth ordered surfaces, region labels and speckled
    grey values (realistic PNG compression, unlike uniform noise).

    Args:
        shape: ``(B-scans, rows, columns)``.
        n_surfaces: surfaces per B-scan; regions are labelled ``0..n_surfaces`` top to bottom.
        seed: random seed.

    Returns:
        ``(surfaces float64 [N, S, W] 0-based rows, labels uint8 [N, H, W],
        grey float32 [N, H, W] in [0, 1])``.
    """
    n, h, w = shape
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 2.0 * np.pi, w)
    top = h * (0.25 + 0.03 * np.sin(x[None, :] + rng.uniform(0, 2 * np.pi, (n, 1))))
    gaps = rng.uniform(0.02, 0.06, n_surfaces) * h
    gaps[0] = 0.0
    surfaces = top[:, None, :] + np.cumsum(gaps)[None, :, None]
    levels = rng.uniform(0.15, 0.85, n_surfaces + 1).astype(np.float32)
    levels[0] = levels[-1] = 0.1  # vitreous and choroid dark
    rows = np.arange(h)[:, None]
    labels = np.empty(shape, np.uint8)
    grey = np.empty(shape, np.float32)
    for k in range(n):  # one B-scan at a time keeps the temporaries small
        labels[k] = (rows[None] > surfaces[k][:, None, :]).sum(axis=0)
        speckle = rng.exponential(1.0, (h, w)).astype(np.float32)
        grey[k] = np.clip(levels[labels[k]] * (0.5 + 0.5 * speckle), 0.0, 1.0)
    return surfaces, labels, grey


# --- helpers shared by the writers -----------------------------------------------------------


def _uint8(grey: np.ndarray) -> np.ndarray:
    """Grey values in [0, 1] as the 8-bit values releases store."""
    return (grey * 255).astype(np.uint8)


def _in_centre(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``values[region]`` in the central third of the columns and 0 elsewhere: lesions (fluid,
    holes) drawn in chosen layers under the fovea."""
    lesions = np.asarray(values, np.uint8)[labels]
    w = labels.shape[-1]
    lesions[..., : w // 3] = 0
    lesions[..., 2 * w // 3 :] = 0
    return lesions


def _save_image(path: Path, array: np.ndarray, **params: Any) -> Path:
    """Writes an array as an image whose format follows the suffix (BMP, JPEG, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **params)
    return path


def _save_mat(path: Path, fields: dict[str, Any]) -> Path:
    """A MATLAB v5 file, compressed as MATLAB's default save writes it (scipy reads both)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, fields, do_compression=True)
    return path


def _cells(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """A MATLAB cell array ``(1, n)`` of ``arrays``."""
    cells = np.empty((1, len(arrays)), dtype=object)
    for i, array in enumerate(arrays):
        cells[0, i] = array
    return cells


def _stack(volume: np.ndarray) -> np.ndarray:
    """``[B-scans, rows, columns]`` as MATLAB releases store volumes: (rows, A-scans, B-scans)."""
    return np.ascontiguousarray(np.moveaxis(volume, 0, -1))


def _sparse_traced(n: int, w: int) -> np.ndarray:
    """bool ``[B-scans, columns]``: 11 B-scans around the fovea traced over the central two
    thirds of the columns, as in Duke DME (11 traced B-scans per subject, 500-548 of 768
    columns) and, roughly, Chiu 2012 (about 11 per volume)."""
    traced = np.zeros((n, w), bool)
    bscans = np.unique(np.round(np.linspace(n / 6, 5 * n / 6 - 1, min(n, 11))).astype(int))
    traced[bscans, w // 6 : w - w // 6] = True
    return traced


def _untraced_nan(surfaces: np.ndarray, traced: np.ndarray) -> np.ndarray:
    """Surfaces ``[N, S, W]`` with NaN where ``traced [N, W]`` is False."""
    return np.where(traced[:, None, :], surfaces, np.nan)


# --- one writer per release format ------------------------------------------------------------


def _write_duke(root: Path, shape: Shape) -> Path:
    """Duke DME (2015_BOE_Chiu): ``Subject_01.mat`` and ``Subject_02.mat`` with ``images``,
    both graders' ``manualLayers`` (8 surfaces) and ``manualFluid`` (NaN on untraced B-scans)
    and ``automaticLayersDME``."""
    n, _, w = shape
    traced = _sparse_traced(n, w)
    for subject in (1, 2):
        surfaces, labels, grey = layered_volume(shape, 8, seed=40 + subject)
        fluid = _in_centre(labels, [0, 0, 0, 1, 0, 1, 0, 0, 0]).astype(float)  # INL and ONL
        fluid[~traced.any(axis=1)] = np.nan  # the release's fluid maps are NaN off the traces
        fluid = _stack(fluid)  # both graders outline the same fluid (as the tests' fixture)
        fields = {"images": _stack(_uint8(grey)),
                  "automaticLayersDME": np.transpose(surfaces, (1, 2, 0))}  # fmt: skip
        for grader in (1, 2):  # grader 2 traces one row lower
            layers = _untraced_nan(surfaces + grader - 1, traced)
            fields[f"manualLayers{grader}"] = np.transpose(layers, (1, 2, 0))  # (8, W, N)
            fields[f"manualFluid{grader}"] = fluid
        _save_mat(root / f"Subject_{subject:02d}.mat", fields)
    return root


def _write_hcms(root: Path, shape: Shape) -> Path:
    """HC-MS: ``vol/<stem>.vol`` (reflectance) and ``delineation/<stem>.mat`` (``bd_pts``,
    9 dense 1-based surfaces) of controls hc01 and hc02."""
    for i, subject in enumerate(("hc01", "hc02")):
        surfaces, _, grey = layered_volume(shape, 9, seed=i)
        stem = f"{subject}_spectralis_macula_v1_s1_R"
        write_vol(root / "vol" / f"{stem}.vol", grey**4)  # reflectance; prepared as x ** 0.25
        bd_pts = np.transpose(surfaces, (2, 0, 1)) + 1.0  # [A-scans, B-scans, 9], 1-based
        (root / "delineation").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "delineation" / f"{stem}.mat", {"bd_pts": bd_pts})
    return root


def _write_retouch(root: Path, shape: Shape) -> Path:
    """RETOUCH: Cirrus ``TRAIN001``/``TRAIN002`` ``oct`` and ``reference`` MetaImages, IRF, SRF
    and PED (1, 2, 3) in three layers of the central columns."""
    spacing_xyz_mm = (0.011742, 0.001955, 0.047244)  # Cirrus
    for i, volume in enumerate(("TRAIN001", "TRAIN002")):
        _, labels, grey = layered_volume(shape, 5, seed=10 + i)
        reference = _in_centre(labels, [0, 0, 1, 2, 3, 0])
        folder = root / "TrainingCirrus" / "RETOUCH-TrainingSet-Cirrus" / volume
        write_mhd(folder / "oct.mhd", _uint8(grey), spacing_xyz_mm)
        write_mhd(folder / "reference.mhd", reference, spacing_xyz_mm)
    return root


def _write_aroi(root: Path, shape: Shape) -> Path:
    """AROI: ``patient1``/``patient2`` raw palette PNGs and ``mask/number`` label PNGs
    (labels 0..4: the regions between four surfaces)."""
    base = root / "AROI - online" / "24 patient"
    for patient in (1, 2):
        _, labels, grey = layered_volume(shape, 4, seed=20 + patient)  # labels 0..4: layers
        folder = base / f"patient{patient}"
        for k in range(shape[0]):
            name = f"patient{patient}_raw{k + 1:04d}.png"
            write_png(folder / "raw" / "labeled" / name, _uint8(grey[k]), "P")
            write_png(folder / "mask" / "number" / name, labels[k])
    return root


def _write_goals(root: Path, shape: Shape) -> Path:
    """GOALS ``Train``: images ``0001.png``, ``0002.png`` (grey stored as RGB), their
    ``Layer_Masks`` (255 other, 0 RNFL, 80 GCIPL, 160 choroid), ``Layer_show`` overlays and
    ``Train_GC_GT.xlsx`` (one glaucoma, one normal eye)."""
    import openpyxl  # only GOALS writes a spreadsheet

    train = root / "GOALS2022-Train" / "Train"
    # Regions: vitreous, RNFL, GCIPL, the rest of the retina, choroid, sclera.
    mask_values = np.array([255, 0, 80, 255, 160, 255], np.uint8)
    overlay = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 0], [0, 0, 255], [0, 0, 0]],
                       np.uint8)  # fmt: skip
    book = openpyxl.Workbook()
    book.active.append(["ImgName", "GC_Label"])
    for eye in (1, 2):
        _, labels, grey = layered_volume(shape, 5, seed=50 + eye)
        for k in range(shape[0]):  # one image per eye in the release
            rgb = np.repeat(_uint8(grey[k])[..., None], 3, axis=-1)
            name = f"{eye:04d}.png"
            write_png(train / "Image" / name, rgb)
            write_png(train / "Layer_Masks" / name, mask_values[labels[k]])
            write_png(train / "Layer_show" / name, np.maximum(rgb, overlay[labels[k]]))
        book.active.append([eye, eye % 2])
    book.save(train / "Train_GC_GT.xlsx")
    return root


#: OIMHS label colours of labels 0..4: background, retina, choroid, cyst, macular hole.
_OIMHS_COLOURS = np.array([[0, 0, 0], [0, 255, 0], [255, 255, 0], [0, 0, 255], [255, 0, 0]],
                          np.uint8)  # fmt: skip


def _write_oimhs(root: Path, shape: Shape) -> Path:
    """OIMHS: ``Images/1/`` and ``Images/2/`` (two patients' eyes) of composites ``<k>.png``:
    the grey B-scan beside its RGB label map, plus the demographics and quality CSVs."""
    base = root / "OIMHS"
    for eye in (1, 2):
        _, regions, grey = layered_volume(shape, 4, seed=60 + eye)
        # Regions: vitreous, inner and outer retina, choroid, sclera; cysts in the outer retina
        # and a hole through the inner one under the fovea.
        labels = np.array([0, 1, 1, 2, 0], np.uint8)[regions]
        lesions = _in_centre(regions, [0, 4, 3, 0, 0])
        labels = np.where(lesions > 0, lesions, labels)
        for k in range(shape[0]):
            left = np.repeat(_uint8(grey[k])[..., None], 3, axis=-1)
            composite = np.concatenate([left, _OIMHS_COLOURS[labels[k]]], axis=1)
            write_png(base / "Images" / str(eye) / f"{k + 1}.png", composite)
    rows = ["Patient ID,Eye ID,Eye category,Age(years),Sex,Stage", "1,1,OD,64,F,3",
            "2,2,OS,71,M,4"]  # fmt: skip
    (base / "Demographics of the participants.csv").write_text("\n".join(rows) + "\n",
                                                               encoding="utf-8-sig")  # fmt: skip
    (base / "Quality Assessment.csv").write_text("Eye ID,Image ID,Low signal strength\n")
    return root


def _write_octa500(root: Path, shape: Shape) -> Path:
    """OCTA-500 6 mm: ``OCTA_6mm/OCT/<id>/<n>.bmp`` and ``Label/GT_Layers/<id>.mat``
    (``Layer`` (6, B-scans, A-scans), whole rows) of eyes 10001 and 10002. The OCTA
    B-scans and en-face maps are left out: the parser does not read them."""
    for i, volume in enumerate((10001, 10002)):
        surfaces, _, grey = layered_volume(shape, 6, seed=70 + i)
        for k, bscan in enumerate(_uint8(grey)):
            _save_image(root / "OCTA_6mm" / "OCT" / str(volume) / f"{k + 1}.bmp", bscan)
        layers = np.rint(np.transpose(surfaces, (1, 0, 2)))  # (surface, B-scan, A-scan)
        _save_mat(root / "Label" / "GT_Layers" / f"{volume}.mat", {"Layer": layers})
    return root


def _write_umn(root: Path, shape: Shape, file_name: str, subjects: int = 2) -> Path:
    """UMN DME / AMD: one ``file_name`` of ``AllSubjects`` and ``ManualFluid1/2`` cells
    (rows, A-scans, B-scans) of the first ``subjects`` subjects; fluid 0/1."""
    stacks, graders = [], {1: [], 2: []}
    for subject in range(subjects):
        _, labels, grey = layered_volume(shape, 5, seed=80 + subject)
        stacks.append(_stack(_uint8(grey)))
        graders[1].append(_stack(_in_centre(labels, [0, 0, 0, 1, 0, 0])))
        graders[2].append(_stack(_in_centre(labels, [0, 0, 0, 1, 1, 0])))  # a larger outline
    fields = {"AllSubjects": _cells(stacks)}
    fields.update({f"ManualFluid{g}": _cells(masks) for g, masks in graders.items()})
    _save_mat(root / file_name, fields)
    return root


def _write_duke_rpedc(root: Path, shape: Shape) -> Path:
    """Duke RPEDC (A2A): ``AMD/..._AMD_Subject_1001.mat`` and ``Control/..._Control_Subject_
    1001.mat`` with ``images`` and ``layerMaps`` (B-scan, A-scan, surface) traced in a disc of
    5 mm (of the 6.7 mm scan) around the centre, NaN outside."""
    n, _, w = shape
    # Pixel centres in [-1, 1]: a disc of 5 / 6.7 of the scan's width holds B-scans at any n.
    b, a = np.meshgrid((np.arange(n) + 0.5) / n * 2 - 1, (np.arange(w) + 0.5) / w * 2 - 1,
                       indexing="ij")  # fmt: skip
    disc = b**2 + a**2 <= (5.0 / 6.7) ** 2
    for i, group in enumerate(("AMD", "Control")):
        surfaces, _, grey = layered_volume(shape, 3, seed=90 + i)
        layer_maps = np.transpose(_untraced_nan(surfaces, disc), (0, 2, 1))
        fields = {"images": _stack(_uint8(grey)), "layerMaps": layer_maps, "Age": 70.0}
        _save_mat(root / group / f"Farsiu_Ophthalmology_2013_{group}_Subject_1001.mat", fields)
    return root


def _write_duke_chiu2012(root: Path, shape: Shape) -> Path:
    """Duke Chiu 2012: ``Group1_Volume1.mat`` and ``Group1_Volume2.mat`` with ``images``, both
    graders' ``manualLayers`` (3 surfaces, 11 traced B-scans, NaN elsewhere) and
    ``automaticLayers`` (every B-scan)."""
    folder = root / "Chiu_IOVS_2011" / "Automatic versus Manual Study"
    traced = _sparse_traced(shape[0], shape[2])
    for volume in (1, 2):
        surfaces, _, grey = layered_volume(shape, 3, seed=100 + volume)
        fields = {"images": _stack(_uint8(grey)),
                  "automaticLayers": np.transpose(surfaces, (1, 2, 0))}  # fmt: skip
        for grader in (1, 2):  # grader 2 traces one row lower
            layers = _untraced_nan(surfaces + grader - 1, traced)
            fields[f"manualLayers{grader}"] = np.transpose(layers, (1, 2, 0))  # (3, W, N)
        _save_mat(folder / f"Group1_Volume{volume}.mat", fields)
    return root


#: Two training cubes of one patient, named as in the official split.
_AICHALLENGER_VOLUMES = (
    "P0012_MacularCube512x128_8-7-2014_13-29-39_OS_sn27946_cube_z",
    "P0012_MacularCube512x128_8-7-2014_13-30-44_OS_sn27947_cube_z",
)


def _write_aichallenger(root: Path, shape: Shape) -> Path:
    """AI-Challenger 2018: two ``Edema_trainingset`` cubes, ``original_images/<VOL>.img/<n>.bmp``
    (8-bit grey) and ``label_images/<VOL>_labelMark/<n>.bmp`` (255 REA, 191 SRF, 128 PED)."""
    base = root / "Edema_trainingset"
    for i, volume in enumerate(_AICHALLENGER_VOLUMES):
        _, labels, grey = layered_volume(shape, 5, seed=110 + i)
        marks = _in_centre(labels, [0, 0, 255, 191, 128, 0])
        for k, (bscan, mark) in enumerate(zip(_uint8(grey), marks, strict=True)):
            _save_image(base / "original_images" / f"{volume}.img" / f"{k + 1}.bmp", bscan)
            _save_image(base / "label_images" / f"{volume}_labelMark" / f"{k + 1}.bmp", mark)
    return root


def _write_jpegs(root: Path, shape: Shape, names: tuple[str, str]) -> Path:
    """Image-level sets: volume ``i``'s B-scans as grey JPEGs ``names[i].format(n=1..)`` (the
    release's class folders and file names)."""
    for i, name in enumerate(names):
        _, _, grey = layered_volume(shape, 4, seed=120 + i)
        for k, bscan in enumerate(_uint8(grey)):
            # The releases' JPEG quality is unknown; 95 as the tests' image-level fixtures.
            _save_image(root / name.format(n=k + 1), bscan, quality=95)
    return root


DATASETS: dict[str, _Dataset] = {  # in the order of docs/datasets.md
    "duke": _Dataset(
        (61, 496, 768), "Subject_XX.mat (images, manualLayers, manualFluid)",
        ("Subject_01", "Subject_02"), _write_duke,
        script_args=lambda count: ["--subjects", *map(str, range(1, count + 1))],
    ),
    "hcms": _Dataset((49, 496, 1024), ".vol + delineation .mat", ("hc01", "hc02"), _write_hcms),
    "retouch": _Dataset(
        (128, 1024, 512), "Cirrus .mhd + .raw", ("TRAIN001", "TRAIN002"), _write_retouch
    ),
    "aroi": _Dataset(
        (47, 1024, 512), "palette + label PNG", ("patient1", "patient2"), _write_aroi
    ),
    "goals": _Dataset(
        (1, 800, 1100), "RGB-grey PNG + mask PNG + .xlsx", ("train_0001", "train_0002"),
        _write_goals, marker="0002.png",
    ),
    "oimhs": _Dataset(
        (31, 512, 512), "composite PNG (B-scan | RGB labels) + CSV", ("eye_1", "eye_2"),
        _write_oimhs, marker="Images/2/", fixed_axes=(2,),  # the parser splits 1024 = 2 x 512
    ),
    "octa500": _Dataset(
        (400, 640, 400), "BMP B-scans + GT_Layers .mat", ("10001", "10002"), _write_octa500
    ),
    "umn_dme": _Dataset(
        (25, 496, 1024), "one .mat of cell arrays", ("Subject_01", "Subject_02"),
        functools.partial(_write_umn, file_name="UMNDataset.mat"),
        write_first=functools.partial(_write_umn, file_name="UMNDataset.mat", subjects=1),
    ),
    "umn_amd": _Dataset(
        (25, 496, 1024), "one .mat of cell arrays", ("Subject_01", "Subject_02"),
        functools.partial(_write_umn, file_name="UMN_Dataset.mat"),
        write_first=functools.partial(_write_umn, file_name="UMN_Dataset.mat", subjects=1),
    ),
    "duke_rpedc": _Dataset(
        (100, 512, 1000), "A2A .mat (images, layerMaps)", ("AMD_1001", "Control_1001"),
        _write_duke_rpedc, marker="Control",
    ),
    # Chiu 2012 is documented only as 1000 A-scans, about 11 traced B-scans per volume: A2A's
    # Bioptigen 100 x 512 x 1000 is assumed.
    "duke_chiu2012": _Dataset(
        (100, 512, 1000), ".mat (images, manualLayers1/2)", ("Group1_Volume1", "Group1_Volume2"),
        _write_duke_chiu2012,
    ),
    "aichallenger": _Dataset(
        (128, 1024, 512), "BMP B-scans + label BMPs", _AICHALLENGER_VOLUMES, _write_aichallenger
    ),
    # Image-level sets: JPEG sizes vary and are unpublished. Kermany: 496 x 512, its most common
    # Spectralis export, 23 B-scans = 108,312 images / 4,686 patients; OCT-C8 (which likely
    # draws on Kermany) the same size; OCTID (Cirrus) 512 x 1024, unconfirmed.
    "kermany": _Dataset(
        (23, 496, 512), "JPEG in class folders", ("train-CNV-1000001", "train-NORMAL-1000002"),
        functools.partial(_write_jpegs, names=("train/CNV/CNV-1000001-{n}.jpeg",
                                               "train/NORMAL/NORMAL-1000002-{n}.jpeg")),
        marker="NORMAL-1000002",
    ),
    "oct_c8": _Dataset(
        (1, 496, 512), "JPEG in class folders", ("amd_train_1", "normal_train_1"),
        functools.partial(_write_jpegs, names=("train/AMD/amd_train_1.jpg",
                                               "train/NORMAL/normal_train_1.jpg")),
        marker="normal_train_1",
    ),
    "octid": _Dataset(
        (1, 512, 1024), "JPEG in class folders", ("NORMAL_NORMAL1", "MH_MH1"),
        functools.partial(_write_jpegs, names=("NORMAL/NORMAL1.jpeg", "MH/MH1.jpeg")),
        marker="MH/",
    ),
}  # fmt: skip


# Runs a scripts/prepare_<name>.py in a fresh interpreter as its `__main__` block does (all but
# one are `sys.exit(prepare_main(__doc__, prepare_<name>, add_options))`; prepare_duke.py has its
# own `main(argv)`), timing the imports and the preparation apart. Peak memory is VmHWM, the
# high-water mark of this process's own pages: ru_maxrss also counts the pages of the parent it
# was forked from (here, a process holding torch), which would hide a small preparation.
_DRIVER = """
import importlib.util, json, resource, sys, time
def usage():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        hwm = ru.ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    return time.perf_counter(), ru.ru_utime + ru.ru_stime, hwm / 1024.0
out, script, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
t0, c0, _ = usage()
spec = importlib.util.spec_from_file_location("prepare_script", script)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from octseg.data.prepared import prepare_main
name = script.rsplit("prepare_", 1)[1][: -len(".py")]
t1, c1, m1 = usage()
if hasattr(module, "main"):
    status = module.main(argv)
else:
    status = prepare_main(module.__doc__, getattr(module, "prepare_" + name),
                          getattr(module, "add_options", None), argv)
t2, c2, m2 = usage()
with open(out, "w") as f:
    json.dump({"status": status, "import_s": t1 - t0, "import_cpu_s": c1 - c0,
               "import_peak_rss_mib": m1, "prepare_s": t2 - t1, "prepare_cpu_s": c2 - c1,
               "peak_rss_mib": m2}, f)
"""


def run_prepare_measured(name: str, argv: list[str], work: Path, tag: str) -> dict[str, float]:
    """Runs ``scripts/prepare_<name>.py argv`` in a fresh process and measures it.

    Args:
        name: the dataset (script ``prepare_<name>.py``).
        argv: the script's arguments.
        work: folder for the run's log (``<tag>.log``) and figures (``<tag>.json``).
        tag: name of this run's files.

    Returns:
        ``import_s``, ``import_cpu_s``, ``import_peak_rss_mib`` (after the imports),
        ``prepare_s``, ``prepare_cpu_s`` and ``peak_rss_mib`` (whole run, MiB).

    Raises:
        RuntimeError: with the end of its output, when the script fails.
    """
    figures = work / f"{tag}.json"
    script = str(REPO_ROOT / "scripts" / f"prepare_{name}.py")
    log = work / f"{tag}.log"
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-c", _DRIVER, str(figures), script, *argv],
                              stdout=out, stderr=subprocess.STDOUT, check=False)  # fmt: skip
    result = json.loads(figures.read_text()) if figures.is_file() else {}
    if done.returncode != 0 or result.get("status") != 0:
        raise RuntimeError(
            f"prepare_{name}.py {' '.join(argv)} failed (status {done.returncode}):\n"
            f"{log.read_text()[-2000:]}"
        )
    result.pop("status")
    return result


def _without(release: Path, folder: Path, marker: str) -> Path:
    """A copy of ``release`` made of symbolic links, without the files whose path holds
    ``marker`` (those of the second volume)."""
    for path in release.rglob("*"):
        relative = path.relative_to(release)
        if path.is_file() and marker not in relative.as_posix():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).symlink_to(path)
    return folder


def _scaled(spec: _Dataset, scale: float) -> Shape:
    """``spec.shape`` times ``scale``, at least 2 B-scans and 32 pixels but never more than the
    full size, the sizes a parser requires (``spec.fixed_axes``) kept."""
    return tuple(  # type: ignore[return-value]
        s if axis in spec.fixed_axes else max(min(s, least), round(s * scale))
        for axis, (s, least) in enumerate(zip(spec.shape, (2, 32, 32), strict=True))
    )


def _check_volumes(prepared: Path, volume_ids: Sequence[str]) -> None:
    """Checks that a preparation in the shared layout wrote the expected volumes (the split of
    the loading ratio names them); Duke DME's own layout has no ``volumes/`` folder."""
    if not (prepared / "volumes").is_dir():
        return
    written = sorted(p.name for p in (prepared / "volumes").iterdir() if p.is_dir())
    if written != sorted(volume_ids):
        raise RuntimeError(f"{prepared} holds volumes {written}; expected {list(volume_ids)}.")


def benchmark_dataset(name: str, work: Path, scale: float = 1.0, steps: int = 10) -> dict:
    """Writes a two-volume release of ``name``, times its preparation script and measures the
    loading ratio on the result (``steps`` training steps per run; 0 skips it).

    Args:
        name: a key of :data:`DATASETS`.
        work: an empty folder for the release, the prepared folders and logs.
        scale: factor on every dimension of the volumes and the training crop.
        steps: timed training steps per run of the loading ratio.

    Returns:
        The dataset's row (see the module docstring).

    Raises:
        RuntimeError: when a preparation fails or writes other volumes than expected.
    """
    spec = DATASETS[name]
    shape = _scaled(spec, scale)
    cfg = _config(name, work, spec.volume_ids, scale)
    # The prepared folder under paths.data_dir is the config's (Duke DME reads duke_dme/).
    folder = Path(str(cfg.dataset.datamodule.data_dir)).name
    start = time.perf_counter()
    release = spec.write(work / "release", shape)
    write_seconds = time.perf_counter() - start
    volume_mib = sum(p.stat().st_size for p in release.rglob("*") if p.is_file()) / 2 / MIB**2

    first = (
        spec.write_first(work / "release1", shape)
        if spec.write_first is not None
        else _without(release, work / "release1", spec.marker or spec.volume_ids[1])
    )
    runs = {}
    for count, source in ((1, first), (2, release)):
        out = work / f"prepared{count}" / folder
        extra = spec.script_args(count) if spec.script_args is not None else []
        runs[count] = run_prepare_measured(name, [str(source), str(out), *extra], work,
                                           f"prepare{count}")  # fmt: skip
        _check_volumes(out, spec.volume_ids[:count])
    row: dict[str, Any] = {
        "dataset": name,
        "release": spec.release,
        "volume_shape": list(shape),
        "release_mib_per_volume": volume_mib,
        "fixture_write_s": write_seconds,
        "s_per_volume": runs[2]["prepare_s"] / 2,
        "cpu_s_per_volume": runs[2]["prepare_cpu_s"] / 2,
        "peak_rss_mib": {"after_imports": runs[1]["import_peak_rss_mib"],
                         "one_volume": runs[1]["peak_rss_mib"],
                         "two_volumes": runs[2]["peak_rss_mib"]},
        "one_volume": runs[1],
        "two_volumes": runs[2],
    }  # fmt: skip
    if steps > 0:
        row.update(_loading_ratio(cfg, steps))
    return row


def _config(name: str, work: Path, volume_ids: tuple[str, str], scale: float) -> DictConfig:
    """The training config of ``name`` on the prepared two volumes (a split of both for
    training), with the default augmentation's crop scaled."""
    split = write_split(work / "split.json", list(volume_ids), [], [], unit="volume")
    crop = [max(16, 16 * round(c * scale / 16)) for c in CROP]
    return compose(
        "train",
        [f"dataset={name}", f"paths.data_dir={work / 'prepared2'}", f"dataset.split={split}",
         "augmentation=light_crop", f"augmentation.crop_size=[{crop[0]},{crop[1]}]"],
    )  # fmt: skip


def _loading_ratio(cfg: DictConfig, steps: int) -> dict[str, Any]:
    """The trunk's loading ratio on the prepared two volumes, through the dataset's config;
    None, with the reason, for image-level sets (their B-scans have no mask to train on)."""
    torch.manual_seed(0)
    dm = instantiate(cfg.dataset.datamodule)
    start = time.perf_counter()
    dm.setup()
    setup_seconds = time.perf_counter() - start
    crop = list(cfg.augmentation.crop_size)
    batch = int(cfg.dataset.datamodule.batch_size)
    row: dict[str, Any] = {
        "datamodule_setup_s": setup_seconds,
        "train_input": f"{batch}x{cfg.dataset.in_channels}x{crop[0]}x{crop[1]}",
        "steps": steps,
    }
    if not getattr(dm, "has_pixel_labels", True):
        return {
            **row,
            "loading_vs_preloaded_ratio": None,
            "loading_s_per_step": None,
            "preloaded_s_per_step": None,
            "loading_ratio_reason": "image-level set: its B-scans have no masks, so the "
            "ratio's segmentation network (U-Net, Dice + CE) cannot train on them",
        }
    figures = loading_vs_preloaded(dm, steps, int(cfg.dataset.num_classes),
                                   int(cfg.dataset.in_channels))  # fmt: skip
    return {**figures, **row}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets", default="all", help=f"'all' or comma-separated among {', '.join(DATASETS)}"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="factor on every volume dimension and the crop (e.g. 0.1)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=10,
        help="timed training steps per loading-ratio run (0: skip the ratio)",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="folder for releases and prepared data (default: a temporary one)",
    )
    args = parser.parse_args(argv)
    names = list(DATASETS) if args.datasets == "all" else [
        n.strip() for n in args.datasets.split(",") if n.strip()]  # fmt: skip
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        parser.error(f"--datasets={args.datasets!r}: unknown {unknown}; choose among "
                     f"{list(DATASETS)} or 'all'.")  # fmt: skip
    if not 0 < args.scale <= 1:
        parser.error(f"--scale={args.scale}: expected a factor in (0, 1].")
    warnings.filterwarnings("ignore")
    for logger in ("pytorch_lightning", "lightning.pytorch", "octseg"):
        logging.getLogger(logger).setLevel(logging.ERROR)

    result: dict[str, Any] = {
        "scale": args.scale,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "datasets": [],
    }
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            result["datasets"].append(benchmark_dataset(name, work, args.scale, args.steps))
    result["load_average_end"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"scale {args.scale}, {result['cpus']} CPUs, load average "
        f"{result['load_average_start'][0]:.1f} -> {result['load_average_end'][0]:.1f}"
    )
    for row in result["datasets"]:
        peak = row["peak_rss_mib"]
        ratio = row.get("loading_vs_preloaded_ratio")
        print(
            f"{row['dataset']:13s} {'x'.join(map(str, row['volume_shape'])):>14s}  "
            f"{row['s_per_volume']:6.2f} s/volume ({row['cpu_s_per_volume']:.2f} CPU s)  "
            f"peak RSS MiB imports {peak['after_imports']:.0f}, one volume "
            f"{peak['one_volume']:.0f}"
            f", two {peak['two_volumes']:.0f}  loading ratio "
            + ("-" if ratio is None else f"{ratio:.2f}")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
