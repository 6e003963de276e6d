"""Vendor OCT files: Heidelberg ``.vol``, ``.e2e`` and HEYEX XML exports, Topcon ``.fda``.

One reader layer for the preparation scripts and for predicting on a clinic's own scans. The
parsing is eyepy's (MedVisBonn/eyepy, MIT; pinned in requirements.txt), except ``.fda`` (see
below); this module picks the reader from the file, converts eyepy's volume to plain arrays and
turns its failures into errors that name the file.

Intensities are returned **as stored** (:attr:`VendorVolume.bscans`):

- ``.vol`` and ``.e2e``: float32 linear reflectance, mostly in [0, 1]; pixels without data
  hold a large sentinel (3.4e38 in ``.vol``, values near 2 in ``.e2e``).
- HEYEX XML: the exported 8-bit TIFFs (already display-mapped by HEYEX).
- ``.fda``: uint8 (JPEG 2000 B-scans) or uint16 (motion-corrected), read by OCTSeg's own
  :mod:`octseg.data.topcon_fda` (eyepy's ``.fda`` path needs oct-converter, which NumPy 2.4
  breaks); no laterality or surfaces.

:func:`to_display` maps reflectance to the 8-bit grey values that datasets and networks see:
``log`` is HEYEX's display curve as eyepy implements it, ``(ln(x + 2.44e-4) + 8.3) / 8.285``
clipped to [0, 1], with pixels above 1.99 (no data) set to 0; ``root`` is the JHU toolbox's
``x ** 0.25`` with pixels above 1 set to 0 (used for HC-MS). Both then scale to 0..255 (rounded).
Integer data pass through unchanged.

Spacing (:attr:`VendorVolume.spacing_um`) is read from the file headers: axial
(``scale_y``), lateral (``scale_x``) and between B-scans (``distance``), converted from mm to
micrometres; NaN where the file holds none.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from octseg.data.topcon_fda import read_topcon_fda

__all__ = ["VENDOR_FORMATS", "VendorVolume", "read_vendor", "to_display", "vendor_format"]

#: file suffix -> format name (a folder holding one ``.xml`` is a HEYEX XML export too).
VENDOR_FORMATS = {
    ".vol": "heyex_vol",
    ".e2e": "heyex_e2e",
    ".xml": "heyex_xml",
    ".fda": "topcon_fda",
}
_LATERALITY = {"OD": "OD", "R": "OD", "OS": "OS", "L": "OS"}
# Reflectance above this is "no data" in .vol (3.4e38) and .e2e (~2) files.
_NO_DATA_ABOVE = 1.99
_DISPLAY_MAPPINGS = ("log", "root")


@dataclass
class VendorVolume:
    """One OCT volume read from a vendor file.

    Attributes:
        bscans: ``[N, H, W]`` B-scans (B-scan, row, A-scan) as stored (see the module docstring).
        spacing_um: ``(axial, lateral, between B-scans)`` micrometres per pixel (NaN unknown).
        laterality: ``"OD"`` (right eye), ``"OS"`` (left eye) or None when not recorded.
        surfaces: layer name (eyepy's: ``ILM``, ``BM``, ``RNFL``, ...) -> float ``[N, W]``
            rows per A-scan (NaN where not traced); only layers traced somewhere are kept.
        format: one of :data:`VENDOR_FORMATS`' values.
        path: the file read.
        meta: anything else worth keeping (scan pattern, B-scan positions in mm).
    """

    bscans: np.ndarray
    spacing_um: tuple[float, float, float]
    laterality: str | None
    surfaces: dict[str, np.ndarray]
    format: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def vendor_format(path: str | Path) -> str:
    """The format of a vendor file or HEYEX XML export folder.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an unknown suffix, or a folder without exactly one ``.xml`` file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Vendor file {path} does not exist.")
    if path.is_dir():
        xmls = sorted(p for p in path.iterdir() if p.suffix.lower() == ".xml")
        if len(xmls) != 1:
            raise ValueError(
                f"{path} is a folder holding {len(xmls)} .xml files; a HEYEX XML export folder "
                "holds exactly one (pass the .xml file itself to choose)."
            )
        return "heyex_xml"
    fmt = VENDOR_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: unknown vendor file type {path.suffix!r}; expected one of "
            f"{sorted(VENDOR_FORMATS)} (or a HEYEX XML export folder)."
        )
    return fmt


def _eyepy_volume(path: Path, fmt: str) -> Any:
    # eyepy is imported here: it pulls in scikit-image, which datasets without vendor files
    # never need. Its import opens no connection (tested).
    from eyepy.io import import_heyex_vol, import_heyex_xml

    if fmt == "heyex_vol":
        return import_heyex_vol(path)
    if fmt == "heyex_xml":
        return import_heyex_xml(path)
    if fmt == "heyex_e2e":
        from eyepy.io import HeE2eReader

        reader = HeE2eReader(path)
        if not reader.series:
            raise ValueError("it holds no OCT series")
        with reader as open_reader:
            return open_reader.volume
    raise ValueError(f"format={fmt!r} is not read through eyepy.")


def _mm_to_um(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value * 1000.0 if math.isfinite(value) and value > 0 else math.nan


def read_vendor(path: str | Path, format: str | None = None) -> VendorVolume:
    """Reads one OCT volume from a vendor file (the first OCT series of an ``.e2e``).

    Args:
        path: a ``.vol``, ``.e2e``, ``.fda`` or HEYEX ``.xml`` file, or a HEYEX XML export
            folder.
        format: one of :data:`VENDOR_FORMATS`' values; None picks it from the path.

    Returns:
        The volume with its B-scans as stored, header spacing, laterality and surfaces.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for an unknown type, or a file the reader cannot parse (truncated,
            corrupt or of another kind), naming the file.
    """
    path = Path(path)
    fmt = format or vendor_format(path)
    if fmt not in VENDOR_FORMATS.values():
        raise ValueError(f"format={fmt!r}; expected one of {sorted(VENDOR_FORMATS.values())}.")
    if fmt == "topcon_fda":
        if not path.is_file():
            raise FileNotFoundError(f"Vendor file {path} does not exist.")
        bscans, spacing, kind = read_topcon_fda(path)
        return VendorVolume(bscans, spacing, None, {}, fmt, path, {"fda_type": kind})
    try:
        volume = _eyepy_volume(path, fmt)
        bscans = volume.raw_data
        meta = volume.meta
        layers = {name: np.asarray(a.data, np.float32) for name, a in volume.layers.items()}
    except (ImportError, FileNotFoundError):
        raise
    except Exception as err:  # eyepy raises construct, struct, XML and index errors alike
        raise ValueError(
            f"{path} could not be read as {fmt} ({type(err).__name__}: {err}); the file is "
            "truncated, corrupt or of another kind. Re-export it from the device software."
        ) from err
    # eyepy's volume and reader refer to each other: without a collection now, the parsed file
    # (about twice the volume) lives until Python's next full collection, so a preparation
    # that streams volume by volume would at times hold several (measured for HC-MS).
    del volume
    gc.collect()
    if bscans.ndim != 3:
        raise ValueError(f"{path}: expected B-scans [N, H, W], got shape {bscans.shape}.")
    if str(meta.get("scale_unit", "mm")) != "mm":
        raise ValueError(f"{path}: spacing unit {meta.get('scale_unit')!r}; expected mm.")
    spacing = (
        _mm_to_um(meta.get("scale_y")),
        _mm_to_um(meta.get("scale_x")),
        _mm_to_um(meta.get("scale_z")) if bscans.shape[0] > 1 else math.nan,
    )
    surfaces = {}
    for name, rows in layers.items():
        rows = np.where(rows >= 3.0e38, np.nan, rows)  # HEYEX's "no value"
        if np.isfinite(rows).any():
            surfaces[name] = rows
    positions = [
        [list(map(float, b.get("start_pos", ()))), list(map(float, b.get("end_pos", ())))]
        for b in meta.get("bscan_meta", [])
    ]
    return VendorVolume(
        bscans=bscans,
        spacing_um=spacing,
        laterality=_LATERALITY.get(str(meta.get("laterality", "")).strip().upper()),
        surfaces=surfaces,
        format=fmt,
        path=path,
        meta={"bscan_positions_mm": positions},
    )


def to_display(bscans: np.ndarray, mapping: str = "log") -> np.ndarray:
    """Grey values of B-scans as stored: float reflectance mapped to uint8, integers unchanged.

    Args:
        bscans: any array of B-scans (float reflectance, uint8 or uint16).
        mapping: ``log`` (HEYEX display curve, as eyepy) or ``root`` (``x ** 0.25``, JHU).

    Returns:
        uint8 for float input; the input itself for uint8/uint16.

    Raises:
        ValueError: for an unknown mapping or another dtype.
    """
    if mapping not in _DISPLAY_MAPPINGS:
        raise ValueError(f"Intensity mapping {mapping!r}; expected one of {_DISPLAY_MAPPINGS}.")
    if bscans.dtype in (np.uint8, np.uint16):
        return bscans
    if bscans.dtype.kind != "f":
        raise ValueError(f"B-scans of dtype {bscans.dtype}; expected float, uint8 or uint16.")
    # B-scan by B-scan: the float64 temporaries of a whole volume (several times 200 MiB for a
    # 49 x 496 x 1024 HC-MS volume) were the preparation's peak memory.
    out = np.empty(bscans.shape, dtype=np.uint8)
    for index in np.ndindex(bscans.shape[:-2]):  # one empty index for a single B-scan
        out[index] = _map_to_uint8(bscans[index], mapping)
    return out


def _map_to_uint8(bscan: np.ndarray, mapping: str) -> np.ndarray:
    data = np.asarray(bscan, dtype=np.float64)
    valid = np.isfinite(data) & (data <= (_NO_DATA_ABOVE if mapping == "log" else 1.0))
    data = np.where(valid, np.clip(data, 0.0, None), 0.0)
    if mapping == "log":
        mapped = (np.log(data + 2.44e-4) + 8.3) / 8.285
    else:
        mapped = data**0.25
    mapped = np.where(valid, np.clip(mapped, 0.0, 1.0), 0.0)
    return np.round(mapped * 255.0).astype(np.uint8)
