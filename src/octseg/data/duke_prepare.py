"""Duke DME (Chiu et al. 2015): official release (``Subject_01.mat`` .. ``Subject_10.mat``, in a
folder or the ``2015_BOE_Chiu.zip`` archive) to OCTSeg's prepared layout.

Prepared layout (one folder)::

    octseg_prepared.json          format marker: format, format_version, grader, mode, counts
    index.csv                     one row per traced B-scan (names, sizes, crop, label counts)
    images/Subject_XX_YY.png      uint8 B-scan, 496 x W
    masks/Subject_XX_YY.png       uint8 labels 0..9, ``ignore_index`` where untraced
    boundaries/Subject_XX_YY.npy  float32 [8, W] boundary rows as released, NaN where untraced

``YY`` is the k-th traced B-scan of the subject (its index among the 61 is in ``index.csv``),
the same naming as the widely used PNG export, so both layouts are read by the same code.

Label convention (that of the Y-Net style export): in each column, with ``b_k`` the row value of
boundary ``k`` (k = 0 ILM .. 7 RPE-BM) truncated to an integer, region ``k`` covers rows
``[b_{k-1}, b_k)`` (``b_{-1} = 0``, ``b_8 = H``): label 0 vitreous above the ILM, 1 RNFL,
2 GCL+IPL, 3 INL, 4 OPL, 5 ONL+ISM, 6 ISE, 7 OS+RPE, 8 below the RPE. A boundary left NaN
inside a traced column, or one that crosses the boundary above it, is raised to the boundary
above (a layer of zero thickness), as the export does. Grader fluid (non-zero ``manualFluidG``)
is painted over the layers as label 9. Columns the grader did not trace get ``ignore_index``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from octseg.utils.io import atomic_write_csv, atomic_write_json, atomic_write_npy, atomic_write_png

__all__ = [
    "PREPARED_FORMAT",
    "PREPARED_FORMAT_VERSION",
    "MARKER_NAME",
    "NUM_BOUNDARIES",
    "FLUID_LABEL",
    "PrepareSummary",
    "find_release_files",
    "load_subject",
    "rasterise_bscan",
    "check_prepared_bscan",
    "prepare_duke",
]

log = logging.getLogger(__name__)

PREPARED_FORMAT = "octseg-duke-prepared"
PREPARED_FORMAT_VERSION = 1
MARKER_NAME = "octseg_prepared.json"
NUM_BOUNDARIES = 8
FLUID_LABEL = 9
SUBJECTS = tuple(range(1, 11))
MODES = ("crop", "full")
_INDEX_FIELDS = [
    "name", "subject", "annotated_bscan", "bscan_index", "height", "width",
    "crop_col_start_in_768", "crop_col_end_in_768", "traced_columns", "fluid_pixels",
    *[f"n_label{k}" for k in range(10)], "n_ignore", "filled_nan_boundaries", "raised_crossings",
]  # fmt: skip


@dataclass
class PrepareSummary:
    """What :func:`prepare_duke` wrote (or found already prepared)."""

    out_dir: str
    grader: int
    mode: str
    ignore_index: int
    subjects: list[int]
    n_bscans: int = 0
    bscans_per_subject: dict[str, int] = field(default_factory=dict)
    widths: list[int] = field(default_factory=list)
    fluid_bscans: int = 0
    filled_nan_boundaries: int = 0
    raised_crossings: int = 0
    skipped: bool = False

    def as_text(self) -> str:
        """A human-readable multi-line summary."""
        state = "already prepared (nothing written)" if self.skipped else "written"
        return "\n".join(
            [
                f"Duke DME prepared layout in {self.out_dir}: {state}",
                f"  grader {self.grader}, mode {self.mode!r}, ignore_index {self.ignore_index}",
                f"  {self.n_bscans} traced B-scans from {len(self.subjects)} subjects "
                f"({self.fluid_bscans} with fluid)",
                f"  widths {min(self.widths, default=0)}..{max(self.widths, default=0)} columns",
                f"  NaN boundaries inside traced columns filled: {self.filled_nan_boundaries}; "
                f"crossing boundaries raised: {self.raised_crossings}",
            ]
        )


def find_release_files(source: str | Path, subjects: Sequence[int] = SUBJECTS) -> dict[int, str]:
    """Locates ``Subject_XX.mat`` for each subject in a release folder (searched recursively)
    or zip archive.

    Args:
        source: the release folder or ``.zip`` archive.
        subjects: subject numbers to find (1..10).

    Returns:
        ``{subject: path}``: a file path for a folder, a member name for a zip archive.

    Raises:
        FileNotFoundError: if ``source`` does not exist or a subject's file is missing.
        ValueError: if a subject's file is found twice.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(
            f"Duke DME release {source} does not exist; pass the folder or the 2015_BOE_Chiu.zip "
            "archive holding Subject_01.mat .. Subject_10.mat."
        )
    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    else:
        names = [str(p) for p in source.rglob("Subject_*.mat")]
    found: dict[int, str] = {}
    for subject in subjects:
        wanted = f"Subject_{subject:02d}.mat"
        hits = [n for n in names if Path(n).name == wanted and "__MACOSX" not in n]
        if len(hits) > 1:
            raise ValueError(f"{wanted} found {len(hits)} times in {source}: {hits}; keep one.")
        if hits:
            found[subject] = hits[0]
    missing = [f"Subject_{s:02d}.mat" for s in subjects if s not in found]
    if missing:
        raise FileNotFoundError(
            f"Duke DME release {source} lacks {', '.join(missing)}; the official release holds "
            "Subject_01.mat .. Subject_10.mat (restrict with --subjects to prepare fewer)."
        )
    return found


def load_subject(source: str | Path, member: str, grader: int) -> dict[str, np.ndarray]:
    """Reads one subject's B-scans and one grader's traces, checking fields and sizes.

    Args:
        source: the release folder or zip archive.
        member: the file path (folder) or member name (zip) from :func:`find_release_files`.
        grader: 1 or 2 (fields ``manualLayers<grader>`` and ``manualFluid<grader>``).

    Returns:
        ``images`` uint8 ``[H, W, N]``, ``layers`` float ``[8, W, N]``, ``fluid`` ``[H, W, N]``.

    Raises:
        ValueError: if the file is not a MATLAB v5 file, lacks a field, or sizes disagree.
    """
    fields = ["images", f"manualLayers{grader}", f"manualFluid{grader}"]
    where = f"{source}:{member}" if Path(source).is_file() else str(member)
    try:
        if Path(source).is_file():
            with zipfile.ZipFile(source) as archive:
                data = scipy.io.loadmat(io.BytesIO(archive.read(member)), variable_names=fields)
        else:
            data = scipy.io.loadmat(member, variable_names=fields)
    except (NotImplementedError, ValueError) as err:  # v7.3 (HDF5) or not a .mat at all
        raise ValueError(
            f"{where} could not be read as a MATLAB v5 file ({err}); the official Duke DME "
            "release is MATLAB v5 - re-download it or re-save the file with save(..., '-v7')."
        ) from err
    missing = [f for f in fields if f not in data]
    if missing:
        found = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(
            f"{where} lacks field(s) {missing} (found {found}); expected 'images', "
            f"'manualLayers{grader}' and 'manualFluid{grader}' as in the official release."
        )
    images, layers, fluid = (data[f] for f in fields)
    if images.ndim == 2:  # a single B-scan is saved by MATLAB without its trailing axis
        images, layers, fluid = images[..., None], layers[..., None], fluid[..., None]
    if images.ndim != 3 or layers.ndim != 3 or fluid.ndim != 3:
        raise ValueError(
            f"{where}: expected 3-D fields, got images {images.shape}, {fields[1]} "
            f"{layers.shape}, {fields[2]} {fluid.shape}."
        )
    h, w, n = images.shape
    if layers.shape != (NUM_BOUNDARIES, w, n) or fluid.shape != (h, w, n):
        raise ValueError(
            f"{where}: sizes disagree: images {images.shape} (H x W x B-scans), {fields[1]} "
            f"{layers.shape} (expected {(NUM_BOUNDARIES, w, n)}), {fields[2]} {fluid.shape} "
            f"(expected {(h, w, n)})."
        )
    if images.dtype != np.uint8:
        if np.nanmin(images) < 0 or np.nanmax(images) > 255:
            raise ValueError(f"{where}: 'images' values outside 0..255 ({images.dtype}).")
        images = np.nan_to_num(images).astype(np.uint8)
    return {"images": images, "layers": layers.astype(np.float64), "fluid": fluid}


def rasterise_bscan(
    boundaries: np.ndarray, fluid: np.ndarray | None, height: int, ignore_index: int = 255
) -> tuple[np.ndarray, dict[str, Any]]:
    """Boundary rows of one B-scan to a region label mask (convention in the module docstring).

    Args:
        boundaries: ``[8, W]`` boundary rows, NaN where untraced.
        fluid: ``[H, W]`` grader fluid (non-zero and finite = fluid), or None.
        height: number of rows H.
        ignore_index: label for columns without any traced boundary.

    Returns:
        The uint8 mask ``[H, W]`` and a dict with ``traced`` (bool ``[W]``),
        ``filled_nan_boundaries`` and ``raised_crossings`` (counts of repaired entries).

    Raises:
        ValueError: if a boundary row lies outside ``[0, height]``.
    """
    finite = np.isfinite(boundaries)
    traced = finite.any(axis=0)
    values = boundaries[finite]
    if values.size and (values.min() < 0 or values.max() > height):
        raise ValueError(
            f"boundary rows range {values.min():.1f}..{values.max():.1f}, outside the image "
            f"height 0..{height}."
        )
    rows = np.where(finite, np.floor(np.where(finite, boundaries, 0)), 0).astype(np.int64)
    ordered = np.maximum.accumulate(rows, axis=0)
    filled = int((~finite[:, traced]).sum())
    raised = int(((ordered != rows) & finite).sum())
    # label = number of boundaries at or above the row (region k spans [b_{k-1}, b_k)).
    row_index = np.arange(height)[None, :, None]
    mask = (row_index >= ordered[:, None, :]).sum(axis=0).astype(np.uint8)
    if fluid is not None:
        is_fluid = np.isfinite(fluid) & (np.nan_to_num(fluid) != 0)
        mask[is_fluid] = FLUID_LABEL
    mask[:, ~traced] = ignore_index
    return mask, {"traced": traced, "filled_nan_boundaries": filled, "raised_crossings": raised}


def check_prepared_bscan(
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    boundaries: np.ndarray | None,
    ignore_index: int,
) -> None:
    """Checks one prepared B-scan: sizes, label range, and top-to-bottom label order per column.

    Raises:
        ValueError: naming the B-scan and the problem.
    """
    if image.shape != mask.shape:
        raise ValueError(f"{name}: image is {image.shape} but mask is {mask.shape}.")
    if boundaries is not None and boundaries.shape != (NUM_BOUNDARIES, mask.shape[1]):
        raise ValueError(
            f"{name}: boundaries are {boundaries.shape}, expected "
            f"{(NUM_BOUNDARIES, mask.shape[1])}."
        )
    bad = np.setdiff1d(np.unique(mask), [*range(FLUID_LABEL + 1), ignore_index])
    if bad.size:
        raise ValueError(
            f"{name}: labels {bad.tolist()} outside 0..{FLUID_LABEL} and {ignore_index}."
        )
    layers = mask.astype(np.int64)
    layers[(mask == FLUID_LABEL) | (mask == ignore_index)] = -1
    # Within a column, non-fluid labels must never decrease downwards: carry the running max.
    running = np.maximum.accumulate(layers, axis=0)
    if np.any((layers >= 0) & (layers < running)):
        cols = np.unique(np.nonzero((layers >= 0) & (layers < running))[1])
        raise ValueError(
            f"{name}: labels out of top-to-bottom order in columns {cols[:10].tolist()}."
        )


def _marker_settings(grader: int, mode: str, ignore_index: int, subjects: Sequence[int]) -> dict:
    return {
        "format": PREPARED_FORMAT,
        "format_version": PREPARED_FORMAT_VERSION,
        "grader": grader,
        "mode": mode,
        "ignore_index": ignore_index,
        "subjects": list(subjects),
    }


def _prepare_subject(
    source: Path, member: str, subject: int, grader: int, mode: str, ignore_index: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]]:
    data = load_subject(source, member, grader)
    images, layers, fluid = data["images"], data["layers"], data["fluid"]
    height, width, _ = images.shape
    traced_bscans = [i for i in range(layers.shape[2]) if np.isfinite(layers[:, :, i]).any()]
    if not traced_bscans:
        raise ValueError(
            f"{member}: grader {grader} traced no B-scan (manualLayers{grader} is all NaN)."
        )
    traced_cols = np.isfinite(layers[:, :, traced_bscans]).any(axis=(0, 2))
    if mode == "crop":  # the subject's traced column range, as the Y-Net style export crops
        cols = np.nonzero(traced_cols)[0]
        start, stop = int(cols[0]), int(cols[-1]) + 1
    else:
        start, stop = 0, width
    for k, b in enumerate(traced_bscans):
        name = f"Subject_{subject:02d}_{k:02d}"
        try:
            mask, info = rasterise_bscan(layers[:, :, b], fluid[:, :, b], height, ignore_index)
        except ValueError as err:
            raise ValueError(f"{member}, B-scan {b} ({name}): {err}") from err
        bounds = layers[:, start:stop, b].astype(np.float32)
        image, mask = np.ascontiguousarray(images[:, start:stop, b]), mask[:, start:stop]
        check_prepared_bscan(f"{member}, B-scan {b} ({name})", image, mask, bounds, ignore_index)
        counts = np.bincount(mask.ravel(), minlength=256)
        row = {
            "name": name, "subject": subject, "annotated_bscan": k, "bscan_index": b,
            "height": height, "width": stop - start, "crop_col_start_in_768": start,
            "crop_col_end_in_768": stop, "traced_columns": int(info["traced"][start:stop].sum()),
            "fluid_pixels": int(counts[FLUID_LABEL]), "n_ignore": int(counts[ignore_index]),
            "filled_nan_boundaries": info["filled_nan_boundaries"],
            "raised_crossings": info["raised_crossings"],
            **{f"n_label{c}": int(counts[c]) for c in range(FLUID_LABEL + 1)},
        }  # fmt: skip
        yield name, image, mask, bounds, row


def _is_complete(out_dir: Path) -> bool:
    index = out_dir / "index.csv"
    if not index.is_file():
        return False
    with index.open(newline="") as f:
        names = [r["name"] for r in csv.DictReader(f)]
    return bool(names) and all(
        (out_dir / sub / f"{n}{ext}").is_file()
        for n in names
        for sub, ext in (("images", ".png"), ("masks", ".png"), ("boundaries", ".npy"))
    )


def prepare_duke(
    source: str | Path,
    out_dir: str | Path,
    grader: int = 1,
    mode: str = "crop",
    ignore_index: int = 255,
    subjects: Sequence[int] = SUBJECTS,
    overwrite: bool = False,
) -> PrepareSummary:
    """Converts the official Duke DME release to OCTSeg's prepared layout (idempotent).

    Args:
        source: release folder or ``2015_BOE_Chiu.zip`` holding ``Subject_XX.mat``.
        out_dir: folder to write (created); usually ``<paths.data_dir>/duke_dme``.
        grader: 1 or 2: whose manual traces become the labels.
        mode: ``"crop"`` keeps each subject's traced column range (Y-Net style); ``"full"`` keeps
            all columns with untraced ones set to ``ignore_index``.
        ignore_index: mask value of untraced columns (must not be a class label 0..9).
        subjects: subject numbers to prepare.
        overwrite: replace a folder prepared with other settings or an older format.

    Returns:
        A :class:`PrepareSummary`; ``skipped`` is True when the folder was already complete.

    Raises:
        ValueError: for bad settings, a folder prepared otherwise (without ``overwrite``), or a
            release file with missing fields, size mismatches or out-of-range values.
        FileNotFoundError: if the release or one of its subjects is missing.
    """
    if grader not in (1, 2):
        raise ValueError(f"grader must be 1 or 2, got {grader!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if 0 <= ignore_index <= FLUID_LABEL or not 0 <= ignore_index <= 255:
        raise ValueError(
            f"ignore_index must be in 10..255 (not a class label), got {ignore_index}."
        )
    subjects = sorted({int(s) for s in subjects})
    if not subjects or not set(subjects) <= set(SUBJECTS):
        raise ValueError(f"subjects must be a non-empty subset of 1..10, got {subjects}.")
    source, out_dir = Path(source), Path(out_dir)
    settings = _marker_settings(grader, mode, ignore_index, subjects)
    marker_path = out_dir / MARKER_NAME
    if marker_path.is_file():
        marker = json.loads(marker_path.read_text())
        same = all(marker.get(k) == v for k, v in settings.items())
        if same and _is_complete(out_dir) and not overwrite:
            log.info("Duke DME already prepared in %s with the same settings.", out_dir)
            summary = PrepareSummary(str(out_dir), grader, mode, ignore_index, subjects)
            for key in ("n_bscans", "bscans_per_subject", "widths", "fluid_bscans",
                        "filled_nan_boundaries", "raised_crossings"):  # fmt: skip
                setattr(summary, key, marker.get(key, getattr(summary, key)))
            summary.skipped = True
            return summary
        if not same and not overwrite:
            theirs = {k: marker.get(k) for k in settings}
            raise ValueError(
                f"{out_dir} was prepared with other settings or an older format ({theirs}), "
                f"requested {settings}; pass --overwrite (overwrite=True) or another folder."
            )
    elif out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(
            f"{out_dir} is not empty and has no {MARKER_NAME}; it is not an OCTSeg prepared "
            "folder (perhaps the PNG export, which OCTSeg reads as is). Choose an empty folder "
            "or pass --overwrite to replace its images/, masks/, boundaries/ and index.csv."
        )
    files = find_release_files(source, subjects)
    marker_path.unlink(missing_ok=True)  # the marker is written last: a partial run is detected
    for sub in ("images", "masks", "boundaries"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    summary = PrepareSummary(str(out_dir), grader, mode, ignore_index, subjects)
    rows = []
    for subject in subjects:
        log.info(
            "Preparing Subject_%02d (grader %d, %s) from %s", subject, grader, mode, files[subject]
        )
        for name, image, mask, bounds, row in _prepare_subject(
            source, files[subject], subject, grader, mode, ignore_index
        ):
            atomic_write_png(out_dir / "images" / f"{name}.png", image)
            atomic_write_png(out_dir / "masks" / f"{name}.png", mask)
            atomic_write_npy(out_dir / "boundaries" / f"{name}.npy", bounds)
            rows.append(row)
            summary.bscans_per_subject[f"Subject_{subject:02d}"] = row["annotated_bscan"] + 1
            summary.widths.append(row["width"])
            summary.fluid_bscans += int(row["fluid_pixels"] > 0)
            summary.filled_nan_boundaries += row["filled_nan_boundaries"]
            summary.raised_crossings += row["raised_crossings"]
    summary.n_bscans = len(rows)
    atomic_write_csv(out_dir / "index.csv", rows, _INDEX_FIELDS)
    marker = {**settings, **{k: v for k, v in asdict(summary).items() if k not in settings}}
    marker.pop("skipped")
    marker.pop("out_dir")
    marker["label_convention"] = (
        "region k spans rows [floor(b_{k-1}), floor(b_k)) per column; fluid (label 9) painted "
        "over layers; untraced columns = ignore_index"
    )
    marker["source"] = str(source)
    atomic_write_json(marker_path, marker)
    return summary
