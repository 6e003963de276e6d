"""HC-MS (He et al., Data in Brief 22:601-604, 2019): 14 healthy controls and 21 multiple
sclerosis patients, one Spectralis macular volume each (49 B-scans of 496 x 1024), nine retinal
boundaries delineated by hand.

Release (``OCT_Manual_Delineations-2018_June_29.zip`` or its ``_b`` variant, as a folder or
archive)::

    [<any one folder>/]vol/hc01_spectralis_macula_v1_s1_R.vol ... ms21_....vol     35 volumes
    [<any one folder>/]delineation/<same stem>.mat                                   35 .mat

Delineations come in two formats: ``control_pts`` (object ``[B-scans, 11]``; cells of ``(x, y)``
spline points, 1-based, x not always sorted; slots 3 and 11 always empty) and ``bd_pts`` (float
``[A-scans, B-scans, 9]``, dense, 1-based). Control points are densified as the JHU toolbox
does (``readControlPoints.m``, re-implemented): per boundary, points sorted by x with duplicate
x dropped, a natural cubic spline with unit knot spacing over the point index, evaluated at
every integer x between the first and last point, held constant beyond them; each boundary is
then raised to the one above where a spline dips above it. B-scans without any delineation are
dropped; B-scans with only some boundaries are dropped with a warning.

Labels (``convertBoundariesToLabels.m`` rule, 0-based): with ``r_k = round(b_k)`` (half away
from zero) the row of boundary k, label k covers rows ``r_{k-1} + 1 .. r_k``: 0 above the ILM,
1..8 the layers RNFL, GCIPL, INL, OPL, ONL, IS, OS, RPE, and 9 below Bruch's membrane (JHU
labels both 0; OCTSeg keeps them apart so that regions are ordered top to bottom). The nine
boundaries are kept as surfaces (float rows, 0-based). Images: the ``.vol`` reflectance mapped
to 8 bit (``intensity``: ``root`` = JHU's ``x ** 0.25`` by default, or ``log`` = HEYEX's
display curve; :func:`octseg.data.vendor.to_display`). Spacing: each file's header.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from scipy.interpolate import CubicSpline

from octseg.data.base import BScanRecord
from octseg.data.prepared import PreparedWriter, PrepareSummary
from octseg.data.vendor import read_vendor, to_display

__all__ = [
    "BOUNDARY_NAMES",
    "NUM_CLASSES",
    "SUBJECTS",
    "boundaries_to_labels",
    "densify_control_points",
    "find_release",
    "prepare_hcms",
    "read_delineation",
    "read_hcms_volume",
]

log = logging.getLogger(__name__)

SUBJECTS = tuple(f"hc{i:02d}" for i in range(1, 15)) + tuple(f"ms{i:02d}" for i in range(1, 22))
BOUNDARY_NAMES = ("ILM", "RNFL-GCL", "IPL-INL", "INL-OPL", "OPL-ONL", "ELM", "IS-OS", "OS-RPE",
                  "BM")  # fmt: skip
NUM_CLASSES = len(BOUNDARY_NAMES) + 1
_STEM = re.compile(r"^(?P<subject>(?:hc|ms)\d{2})_[^/]*$", re.IGNORECASE)
_INTENSITIES = ("root", "log")


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB's ``round`` (half away from zero); numpy rounds half to even."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _spline_rows(points: np.ndarray) -> tuple[int, np.ndarray]:
    """Dense rows of one boundary from its (x, y) points (1-based x): ``(first x, rows)``."""
    order = np.argsort(points[:, 0], kind="stable")
    x, y = points[order, 0], points[order, 1]
    x, first = np.unique(x, return_index=True)  # duplicate x: the first of them is kept
    y = y[first]
    xi = np.round(x).astype(int)
    if len(xi) == 1:
        return int(xi[0]), y.astype(np.float64)
    dense_x = np.arange(xi[0], xi[-1] + 1)
    # Knots at the point index (not at x): between points i and i+1 the parameter runs
    # i + (x - x_i) / (x_{i+1} - x_i), as in the toolbox; a natural end condition.
    segment = np.clip(np.searchsorted(xi, dense_x, side="right") - 1, 0, len(xi) - 2)
    t = segment + (dense_x - xi[segment]) / (xi[segment + 1] - xi[segment])
    spline = CubicSpline(np.arange(len(xi)), y, bc_type="natural")
    return int(xi[0]), spline(t)


def densify_control_points(
    control_pts: np.ndarray, width: int, height: int | None = None, name: str = "control_pts"
) -> np.ndarray:
    """Dense 0-based boundary rows from HC-MS ``control_pts`` cells.

    Args:
        control_pts: object array ``[B-scans, slots]`` of float ``(n, 2)`` (x, y) 1-based
            points (empty cells where a slot or B-scan is not delineated).
        width: A-scans per B-scan (x runs 1..width).
        height: rows per B-scan, to check y (None: unchecked).
        name: the file, for error messages.

    Returns:
        float64 ``[B-scans, boundaries, width]`` rows (0-based), each boundary at or below the
        one above; NaN for B-scans without any delineation. Slots empty in every B-scan are
        dropped.

    Raises:
        ValueError: naming the file, B-scan and slot, for points outside the B-scan.
    """
    cells = np.asarray(control_pts, dtype=object)
    if cells.ndim != 2:
        raise ValueError(f"{name}: control_pts must be [B-scans, slots], got {cells.shape}.")

    def filled(cell: Any) -> bool:
        return cell is not None and np.asarray(cell).size > 0

    used = [j for j in range(cells.shape[1]) if any(filled(c) for c in cells[:, j])]
    out = np.full((cells.shape[0], len(used), width), np.nan)
    columns = np.arange(1, width + 1)
    for i in range(cells.shape[0]):
        above = None
        for k, j in enumerate(used):
            if not filled(cells[i, j]):
                above = None
                continue
            points = np.asarray(cells[i, j], dtype=np.float64).reshape(-1, 2)
            x, y = points[:, 0], points[:, 1]
            if x.min() < 1 or x.max() > width or (height is not None and
                                                  (y.min() < 1 or y.max() > height)):  # fmt: skip
                raise ValueError(
                    f"{name}: B-scan {i} slot {j + 1} has points x {x.min():g}..{x.max():g}, "
                    f"y {y.min():g}..{y.max():g}; expected 1-based x in 1..{width}"
                    + (f" and y in 1..{height}" if height is not None else "")
                    + " (the volume's A-scans and rows)."
                )
            start, dense = _spline_rows(points)
            # Beyond the first and last point the boundary keeps its end value.
            rows = dense[np.clip(columns - start, 0, len(dense) - 1)]
            if above is not None:
                rows = np.maximum(rows, above)
            out[i, k] = rows - 1.0
            above = rows
    return out


def boundaries_from_bd_pts(bd_pts: np.ndarray, name: str = "bd_pts") -> np.ndarray:
    """Dense 0-based rows ``[B-scans, 9, width]`` from ``bd_pts`` ``[width, B-scans, 9]``
    (1-based; all-zero B-scans are undelineated: NaN), each boundary clamped at or below the
    one above (as for control points)."""
    bd = np.asarray(bd_pts, dtype=np.float64)
    if bd.ndim != 3 or bd.shape[2] != len(BOUNDARY_NAMES):
        raise ValueError(
            f"{name}: bd_pts must be [A-scans, B-scans, {len(BOUNDARY_NAMES)}], got {bd.shape}."
        )
    rows = np.transpose(bd, (1, 2, 0))
    rows = np.maximum.accumulate(rows, axis=1) - 1.0
    blank = ~np.any(bd != 0, axis=(0, 2))
    rows[blank] = np.nan
    return rows


def read_delineation(
    source: str | Path | bytes, n_bscans: int, width: int, height: int, name: str | None = None
) -> np.ndarray:
    """The boundaries of one HC-MS delineation ``.mat`` (either format).

    Args:
        source: the ``.mat`` path or its bytes.
        n_bscans: B-scans in the volume.
        width: A-scans per B-scan.
        height: rows per B-scan.
        name: the file name for messages (default: ``source``).

    Returns:
        float64 ``[n_bscans, 9, width]`` 0-based rows, NaN for undelineated B-scans.

    Raises:
        ValueError: naming the file, for a file that is not a ``.mat``, lacks both
            ``control_pts`` and ``bd_pts``, or whose sizes differ from the volume's.
    """
    name = name or str(source)
    try:
        mat = scipy.io.loadmat(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception as err:  # scipy raises ValueError, TypeError or OSError by cause
        raise ValueError(f"{name} could not be read as a MATLAB .mat file ({err}).") from err
    if "control_pts" in mat:
        bounds = densify_control_points(mat["control_pts"], width, height, name)
    elif "bd_pts" in mat:
        bounds = boundaries_from_bd_pts(mat["bd_pts"], name)
    else:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{name} holds {keys}; an HC-MS delineation holds control_pts or bd_pts.")
    if bounds.shape != (n_bscans, len(BOUNDARY_NAMES), width):
        raise ValueError(
            f"{name}: delineation of {bounds.shape[0]} B-scans x {bounds.shape[1]} boundaries x "
            f"{bounds.shape[2]} A-scans; the volume has {n_bscans} B-scans x {width} A-scans "
            f"and HC-MS has {len(BOUNDARY_NAMES)} boundaries."
        )
    finite = bounds[np.isfinite(bounds)]
    if finite.size and (finite.min() < 0 or finite.max() > height - 1):
        raise ValueError(
            f"{name}: boundary rows {finite.min() + 1:g}..{finite.max() + 1:g} (1-based) "
            f"outside the volume's 1..{height} rows."
        )
    return bounds


def boundaries_to_labels(bounds: np.ndarray, height: int) -> np.ndarray:
    """Label map ``[height, W]`` uint8 from ordered 0-based boundary rows ``[S, W]``: row r has
    the label of the number of boundaries with ``round(b_k) < r`` (0 above the first
    boundary, S below the last)."""
    rounded = _round_half_away(np.asarray(bounds, dtype=np.float64))
    rows = np.arange(height)[:, None, None]
    return (rows > rounded[None]).sum(axis=1).astype(np.uint8)


@dataclass
class _Release:
    """Where each subject's two files are: ``{subject: (vol name, mat name)}`` inside a folder
    or a zip archive."""

    source: Path
    files: dict[str, tuple[str | None, str | None]]
    archive: zipfile.ZipFile | None = None

    @contextmanager
    def vol_path(self, name: str) -> Iterator[Path]:
        if self.archive is None:
            yield self.source / name
            return
        with tempfile.TemporaryDirectory() as tmp:  # eyepy reads from a path
            path = Path(tmp) / Path(name).name
            path.write_bytes(self.archive.read(name))
            yield path

    def mat(self, name: str) -> str | Path | bytes:
        return self.archive.read(name) if self.archive is not None else self.source / name


def _list_files(source: Path, archive: zipfile.ZipFile | None) -> list[str]:
    if archive is not None:
        return [n for n in archive.namelist() if not n.endswith("/")]
    return [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]


def find_release(source: str | Path) -> _Release:
    """Locates the HC-MS volumes and delineations in a folder or zip archive.

    Tolerates one enclosing folder (``OCT_Manual_Delineations-2018_June_29/``, the ``_b``
    variant, or any other name).

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: if it holds no HC-MS files, or is the ``vol/`` or ``delineation/`` folder
            itself (the level above is expected).
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"HC-MS release {source} does not exist.")
    archive = zipfile.ZipFile(source) if source.is_file() else None
    names = _list_files(source, archive)
    files: dict[str, list[str | None]] = {}
    roots = set()
    for name in names:
        parts = name.split("/")
        if len(parts) < 2 or len(parts) > 3 or parts[-2] not in ("vol", "delineation"):
            continue
        stem, dot, ext = parts[-1].rpartition(".")
        match = _STEM.match(stem)
        want = {"vol": "vol", "delineation": "mat"}[parts[-2]]
        if not dot or ext.lower() != want or not match:
            continue
        roots.add("/".join(parts[:-2]))
        slot = files.setdefault(match["subject"].lower(), [None, None])
        slot[0 if want == "vol" else 1] = name
    if len(roots) > 1:
        raise ValueError(
            f"{source} holds several HC-MS releases ({sorted(roots)}); point at one of them."
        )
    if not files:
        loose = [n for n in names if n.lower().endswith((".vol", ".mat"))][:3]
        hint = (
            f" It holds {loose} but not under vol/ and delineation/: pass the folder (or .zip) "
            "that holds the vol/ and delineation/ folders, not one of them."
            if loose or source.name in ("vol", "delineation")
            else ""
        )
        raise ValueError(
            f"{source} holds no HC-MS files (expected vol/<hcNN|msNN>_*.vol and "
            f"delineation/<same>.mat, directly or inside one folder).{hint}"
        )
    return _Release(source, {k: (v[0], v[1]) for k, v in sorted(files.items())}, archive)


def read_hcms_volume(
    vol_path: str | Path,
    delineation: str | Path | bytes,
    subject: str,
    intensity: str = "root",
    mat_name: str | None = None,
) -> tuple[list[BScanRecord], dict[str, np.ndarray], dict[str, Any]]:
    """Parses one HC-MS volume and its delineation.

    Args:
        vol_path: the ``.vol`` file.
        delineation: the ``.mat`` path or bytes.
        subject: ``hcNN`` or ``msNN`` (volume and subject id).
        intensity: ``root`` or ``log`` (:func:`octseg.data.vendor.to_display`).
        mat_name: the ``.mat`` name for messages.

    Returns:
        ``(records, surfaces, meta)``: the delineated B-scans (uint8 images, uint8 labels
        0..9, header spacing), ``{case_id: float32 [9, W]}`` and volume metadata.

    Raises:
        ValueError: naming the file, for unreadable files or sizes that do not match.
    """
    volume = read_vendor(vol_path, "heyex_vol")
    n, height, width = volume.bscans.shape
    bounds = read_delineation(delineation, n, width, height, mat_name)
    images = to_display(volume.bscans, intensity)
    records, surfaces, partial = [], {}, []
    for k in range(n):
        traced = np.isfinite(bounds[k]).all(axis=1)
        if not traced.any():
            continue  # not delineated: dropped, as the toolbox's Preprocess.m does
        if not traced.all():
            partial.append(k)
            continue
        case_id = f"{subject}_b{k:02d}"
        records.append(
            BScanRecord(
                image=images[k],
                mask=boundaries_to_labels(bounds[k], height),
                case_id=case_id,
                volume_id=subject,
                bscan_index=k,
                spacing_um=volume.spacing_um,
                subject_id=subject,
            )
        )
        surfaces[case_id] = bounds[k].astype(np.float32)
    if partial:
        log.warning(
            "%s: B-scans %s have only some boundaries delineated; dropped.",
            mat_name or delineation, partial,
        )  # fmt: skip
    meta = {
        "vol": Path(vol_path).name,
        "laterality": volume.laterality,
        "group": "healthy control" if subject.startswith("hc") else "multiple sclerosis",
        "intensity": intensity,
        "delineated_bscans": len(records),
        "partially_delineated_dropped": partial,
        "surface_names": list(BOUNDARY_NAMES),
    }
    return records, surfaces, meta


def prepare_hcms(
    source: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    intensity: str = "root",
    subjects: Sequence[str] | None = None,
) -> PrepareSummary:
    """Prepares HC-MS from the official release into OCTSeg's prepared layout.

    Args:
        source: the release folder or zip archive.
        out_dir: the output folder (``<paths.data_dir>/hcms``).
        overwrite: replace a folder prepared with other settings.
        intensity: ``root`` (JHU ``x ** 0.25``, default) or ``log`` (HEYEX display).
        subjects: subset of :data:`SUBJECTS` (default all 35).

    Returns:
        The summary (also stored in the marker).

    Raises:
        FileNotFoundError, ValueError: naming the file or setting at fault.
    """
    if intensity not in _INTENSITIES:
        raise ValueError(f"intensity={intensity!r}; expected one of {list(_INTENSITIES)}.")
    wanted = [s.lower() for s in (subjects or SUBJECTS)]
    unknown = sorted(set(wanted) - set(SUBJECTS))
    if unknown:
        raise ValueError(f"Unknown HC-MS subjects {unknown}; expected hc01..hc14, ms01..ms21.")
    release = find_release(source)
    writer = PreparedWriter(
        out_dir, "hcms", {"intensity": intensity, "labels": "jhu-0..9"}, NUM_CLASSES,
        overwrite=overwrite,
    )  # fmt: skip
    missing = []
    try:
        for subject in wanted:
            vol_name, mat_name = release.files.get(subject, (None, None))
            if vol_name is None or mat_name is None:
                lacking = [w for w, f in (("vol", vol_name), ("delineation", mat_name)) if not f]
                missing.append(f"{subject} (no {' and no '.join(lacking)} file)")
                continue
            if writer.has_volume(subject):
                writer.skip_volume(subject)
                continue
            with release.vol_path(vol_name) as vol_path:
                records, surfaces, meta = read_hcms_volume(
                    vol_path, release.mat(mat_name), subject, intensity, mat_name
                )
            if not records:
                raise ValueError(f"{mat_name}: no B-scan is delineated.")
            writer.write_volume(records, surfaces, meta)
            log.info("hcms: %s, %d delineated B-scans", subject, len(records))
            del records, surfaces  # else they live on while the next volume is read
    finally:
        if release.archive is not None:
            release.archive.close()
    return writer.finish(missing=missing)
