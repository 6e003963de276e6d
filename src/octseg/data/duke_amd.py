"""Duke's Bioptigen AMD sets with three traced surfaces to OCTSeg's prepared layout
(:mod:`octseg.data.prepared`): the A2A SD-OCT study set (Farsiu et al., Ophthalmology 2014,
``duke_rpedc``) and the Chiu et al. IOVS 2012 validation set (``duke_chiu2012``).

Releases (folder or archive, MATLAB v5)::

    duke_rpedc:    AMD/Farsiu_Ophthalmology_2013_AMD_Subject_1001.mat .. _1269.mat
                   Control/Farsiu_Ophthalmology_2013_Control_Subject_1001.mat .. _1115.mat
                   'images' uint8 (512, 1000, 100) = (row, A-scan, B-scan),
                   'layerMaps' (100, 1000, 3) = (B-scan, A-scan, surface), NaN untraced
    duke_chiu2012: Chiu_IOVS_2011/Automatic versus Manual Study/Group{1..4}_Volume{1..5}.mat
                   'images' (rows, 1000, n), 'manualLayers1'/'manualLayers2' (3, 1000, n)

Surfaces: ILM, inner RPEDC (RPE + drusen complex), outer Bruch's membrane. Labels
(:mod:`octseg.data.layer_labels`): 0 above the ILM, 1 retina (ILM to inner RPEDC), 2 RPEDC,
3 below Bruch's membrane; only traced B-scans are prepared, and columns where a surface is NaN
get ``ignore_index``. Surface rows are used as stored (whether they are 1-based MATLAB rows is
unconfirmed). Spacing is not in the files and published values conflict: volumes carry none,
the config's value applies.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from octseg.data.base import BScanRecord
from octseg.data.layer_labels import surfaces_to_labels
from octseg.data.prepared import PreparedWriter, PrepareSummary
from octseg.data.release import Release, load_mat

__all__ = [
    "CHIU2012_VOLUMES",
    "CLASS_NAMES",
    "RPEDC_SUBJECTS",
    "add_prepare_options",
    "prepare_duke_chiu2012",
    "prepare_duke_rpedc",
]

CLASS_NAMES = ("vitreous", "retina", "RPEDC", "choroid")
NUM_SURFACES = 3
#: subject numbers of the full A2A release per group
RPEDC_SUBJECTS = {"AMD": range(1001, 1270), "Control": range(1001, 1116)}
CHIU2012_VOLUMES = tuple(f"Group{g}_Volume{v}" for g in range(1, 5) for v in range(1, 6))
_RPEDC_FILE = re.compile(r"(?:^|/)Farsiu_Ophthalmology_2013_(AMD|Control)_Subject_(\d+)\.mat$")
_CHIU_FILE = re.compile(r"(?:^|/)(Group\d+_Volume\d+)\.mat$")
_RPEDC_ROOT = (
    "the Duke RPEDC release folder (or archive) holding AMD/ and Control/ with "
    "Farsiu_Ophthalmology_2013_<AMD|Control>_Subject_<n>.mat"
)
_CHIU_ROOT = (
    "the Duke Chiu 2012 release folder (or archive) holding Chiu_IOVS_2011/Automatic versus "
    "Manual Study/Group<g>_Volume<v>.mat"
)


def _find(release: Release, pattern: re.Pattern[str], what: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in release.names:
        if m := pattern.search(name):
            key = "_".join(m.groups())
            if key in found:
                raise ValueError(
                    f"{key} is in {release.source} twice ({found[key]}, {name}); keep one copy."
                )
            found[key] = name
    if not found:
        mats = [n for n in release.names if n.lower().endswith(".mat")][:3]
        hint = f" (.mat files found: {mats})" if mats else ""
        raise FileNotFoundError(f"No release file under {release.source}; expected {what}{hint}.")
    return found


def _images(value: np.ndarray, where: str) -> np.ndarray:
    if value.ndim == 2:  # MATLAB drops a trailing axis of length 1
        value = value[..., None]
    if value.ndim != 3:
        raise ValueError(f"{where}: 'images' is {value.shape}, expected (rows, A-scans, B-scans).")
    if value.dtype != np.uint8:
        finite = np.nan_to_num(value)
        if finite.min() < 0 or finite.max() > 255 or np.any(finite != np.round(finite)):
            raise ValueError(f"{where}: 'images' is {value.dtype} outside the integers 0..255.")
        value = finite.astype(np.uint8)
    return value


def _volume_records(
    images: np.ndarray,
    surfaces: np.ndarray,
    volume_id: str,
    where: str,
    min_traced: float,
    ignore_index: int,
) -> tuple[list[BScanRecord], dict[str, np.ndarray]]:
    """B-scans ``images[:, :, b]`` with surfaces ``surfaces[b]`` ``[3, W]``; untraced B-scans
    (fully traced columns <= ``min_traced`` of the width) are left out."""
    height, width, _ = images.shape
    records, rows = [], {}
    for b in range(images.shape[2]):
        traced = np.isfinite(surfaces[b]).all(axis=0).mean()
        if traced == 0 or traced <= min_traced:
            continue
        case_id = f"{volume_id}_{b:03d}"
        mask, _ = surfaces_to_labels(surfaces[b], height, ignore_index, f"{where} B-scan {b + 1}")
        rows[case_id] = surfaces[b].astype(np.float32)
        image = np.ascontiguousarray(images[:, :, b])
        records.append(BScanRecord(image, mask, case_id, volume_id, b, None, volume_id))
    if not records:
        raise ValueError(
            f"{where}: no traced B-scan (every surface NaN, or fewer than {min_traced:.0%} of "
            f"the {width} columns traced); lower --min-traced or check the file."
        )
    return records, rows


_AXES = {"B": "B-scans", "A": "A-scans", "S": "surfaces"}


def _read_traced_volume(
    release: Release,
    name: str,
    volume_id: str,
    key: str,
    axes: str,
    expected: str,
    min_traced: float,
) -> tuple[list[BScanRecord], dict[str, np.ndarray], int]:
    """Reads ``images`` and the surfaces ``key`` of one release file into records.

    Args:
        release: the release.
        name: the ``.mat`` file.
        volume_id: the volume's id.
        key: the surfaces variable.
        axes: the order of its axes: ``B`` B-scan, ``A`` A-scan, ``S`` surface (``BAS`` for
            ``layerMaps``, ``SAB`` for ``manualLayers``).
        expected: what the file should hold, for errors.
        min_traced: see :func:`prepare_duke_rpedc`.

    Returns:
        The records, the surface rows by case id and the number of B-scans in the file.
    """
    where = release.where(name)
    data = load_mat(release, name, ["images", key], expected)
    images, layers = _images(data["images"], where), np.asarray(data[key], float)
    layers = layers[..., None] if layers.ndim == 2 else layers  # MATLAB drops a last axis of 1
    n, w = images.shape[2], images.shape[1]
    shape = tuple({"B": n, "A": w, "S": NUM_SURFACES}[a] for a in axes)
    if layers.shape != shape:
        raise ValueError(
            f"{where}: '{key}' is {layers.shape}, expected {shape} "
            f"({', '.join(_AXES[a] for a in axes)}) for 'images' {images.shape}."
        )
    surfaces = np.transpose(layers, [axes.index(a) for a in "BSA"])  # [B-scan, surface, A-scan]
    records, rows = _volume_records(images, surfaces, volume_id, where, min_traced, 255)
    return records, rows, n


def add_prepare_options(parser: argparse.ArgumentParser, grader: bool = False) -> None:
    """The options of ``scripts/prepare_duke_rpedc.py`` and (with ``grader``)
    ``scripts/prepare_duke_chiu2012.py``."""
    if grader:
        parser.add_argument("--grader", type=int, choices=(1, 2), default=1, help="default: 1")
    parser.add_argument(
        "--min-traced", type=float, default=0.0,
        help="keep B-scans with more than this fraction of columns traced (default 0: any)",
    )  # fmt: skip


def _check_min_traced(min_traced: float) -> float:
    if not 0.0 <= float(min_traced) < 1.0:
        raise ValueError(f"min_traced must be in [0, 1), got {min_traced!r} (--min-traced).")
    return float(min_traced)


def prepare_duke_rpedc(
    source: str | Path, out_dir: str | Path, overwrite: bool = False, min_traced: float = 0.0
) -> PrepareSummary:
    """Prepares the Duke RPEDC (A2A SD-OCT) release into ``out_dir`` (module docstring).

    Args:
        source: the release folder or archive.
        out_dir: the prepared folder (``<paths.data_dir>/duke_rpedc``).
        overwrite: replace a folder prepared with other settings.
        min_traced: keep B-scans whose fully traced columns exceed this fraction of the width
            (0: any traced column; the JHU preprocessing keeps > 2/3).

    Returns:
        The summary; ``missing`` lists the subjects (``AMD_1001``, ``Control_1001``, ...) of
        the full release that are not in ``source``.

    Raises:
        FileNotFoundError, ValueError: naming the file at fault.
    """
    min_traced = _check_min_traced(min_traced)
    with Release(source, _RPEDC_ROOT) as release:
        return _prepare_rpedc(release, out_dir, overwrite, min_traced)


def _prepare_rpedc(
    release: Release, out_dir: str | Path, overwrite: bool, min_traced: float
) -> PrepareSummary:
    files = _find(release, _RPEDC_FILE, _RPEDC_ROOT)
    files = {f"{k.split('_')[0]}_{int(k.split('_')[1])}": v for k, v in files.items()}
    writer = PreparedWriter(
        out_dir, "duke_rpedc", {"min_traced": min_traced}, len(CLASS_NAMES), overwrite=overwrite
    )

    def read(volume_id: str) -> tuple[list[BScanRecord], dict, dict]:
        records, rows, n = _read_traced_volume(
            release, files[volume_id], volume_id, "layerMaps", "BAS",
            "'images' (512, 1000, 100) and 'layerMaps' (100, 1000, 3)", min_traced,
        )  # fmt: skip
        return records, rows, {"group": volume_id.split("_")[0], "bscans": n}

    writer.write_volumes(sorted(files), read)
    expected = [f"{g}_{s}" for g, ids in RPEDC_SUBJECTS.items() for s in ids]
    return writer.finish(missing=[v for v in expected if v not in files])


def prepare_duke_chiu2012(
    source: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    grader: int = 1,
    min_traced: float = 0.0,
) -> PrepareSummary:
    """Prepares the Duke Chiu 2012 (IOVS) release into ``out_dir`` (module docstring).

    Args:
        source: the release folder or archive.
        out_dir: the prepared folder (``<paths.data_dir>/duke_chiu2012``).
        overwrite: replace a folder prepared with other settings.
        grader: 1 or 2 (``manualLayers1`` / ``manualLayers2``).
        min_traced: as in :func:`prepare_duke_rpedc`.

    Returns:
        The summary; ``missing`` lists the volumes of the 20 that are not in ``source``.

    Raises:
        FileNotFoundError, ValueError: naming the file at fault.
    """
    if grader not in (1, 2):
        raise ValueError(f"grader must be 1 or 2, got {grader!r} (--grader).")
    min_traced = _check_min_traced(min_traced)
    with Release(source, _CHIU_ROOT) as release:
        return _prepare_chiu2012(release, out_dir, overwrite, grader, min_traced)


def _prepare_chiu2012(
    release: Release, out_dir: str | Path, overwrite: bool, grader: int, min_traced: float
) -> PrepareSummary:
    files = _find(release, _CHIU_FILE, _CHIU_ROOT)
    writer = PreparedWriter(
        out_dir,
        "duke_chiu2012",
        {"grader": grader, "min_traced": min_traced},
        len(CLASS_NAMES),
        overwrite=overwrite,
    )
    key = f"manualLayers{grader}"

    def read(volume_id: str) -> tuple[list[BScanRecord], dict, dict]:
        records, rows, n = _read_traced_volume(
            release, files[volume_id], volume_id, key, "SAB",
            f"'images' and '{key}' (3, 1000, n)", min_traced,
        )  # fmt: skip
        return records, rows, {"grader": grader, "bscans": n}

    writer.write_volumes(sorted(files), read)
    return writer.finish(missing=[v for v in CHIU2012_VOLUMES if v not in files])
