"""RETOUCH (MICCAI 2017; Bogunović et al., IEEE TMI 38(8), 2019): the 70 training volumes of the
official release (Cirrus, Spectralis, Topcon) to OCTSeg's prepared layout.

Release layout (an outer ``Training<Vendor>/`` folder is missing from some copies; any level
above ``TRAINnnn`` works)::

    TrainingCirrus/RETOUCH-TrainingSet-Cirrus/TRAIN001..024/{oct,reference}.{mhd,raw}
    TrainingSpectralis/RETOUCH-TrainingSet-Spectralis/TRAIN025..048/...
    TrainingTopcon/RETOUCH-TrainingSet-Topcon/TRAIN049..070/...

Each ``.mhd`` is a MetaImage text header naming its ``.raw`` voxel file. ``DimSize`` and
``ElementSpacing`` (mm) are ordered (x, y, z) = (lateral, axial, B-scan) with x fastest, so the
voxels are read as numpy ``(z, y, x)``: B-scan ``z`` is the image ``[y, x]``. The ``oct`` dtype
comes from ``ElementType`` (``MET_UCHAR`` for Cirrus and Topcon, ``MET_USHORT`` for
Spectralis) and is kept; ``reference`` holds 0 background, 1 IRF, 2 SRF, 3 PED, which are
OCTSeg's labels as they are. Spacing per volume is the header's, reordered to
(axial, lateral, B-scan) micrometres.

The header is read by a small parser rather than SimpleITK: RETOUCH uses a handful of MetaImage
keys, and reading the ``.raw`` ourselves gives exact errors for truncated or oversized files and
works inside a ``.zip`` as downloaded, without a 50 MB dependency.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from octseg.data.base import BScanRecord
from octseg.data.prepared import PreparedWriter, PrepareSummary
from octseg.data.release import Release, join
from octseg.data.splits import rotating_folds

__all__ = [
    "CLASS_NAMES",
    "MhdHeader",
    "VENDORS",
    "find_volumes",
    "prepare_retouch",
    "read_mhd",
    "read_mhd_header",
    "read_volume",
    "split_specs",
    "vendor_of",
    "volume_ids",
]


CLASS_NAMES = ("background", "IRF", "SRF", "PED")
#: Training volume numbers of each vendor in the official release.
VENDORS: dict[str, range] = {
    "Cirrus": range(1, 25),
    "Spectralis": range(25, 49),
    "Topcon": range(49, 71),
}
_VOLUME_DIR = re.compile(r"^TRAIN(\d{3})$")
_MET_TYPES = {
    "MET_UCHAR": np.uint8,
    "MET_CHAR": np.int8,
    "MET_USHORT": np.uint16,
    "MET_SHORT": np.int16,
    "MET_UINT": np.uint32,
    "MET_INT": np.int32,
    "MET_FLOAT": np.float32,
    "MET_DOUBLE": np.float64,
}
_LAYOUT = "TrainingCirrus/RETOUCH-TrainingSet-Cirrus/TRAIN001/{oct,reference}.{mhd,raw}"
_WHAT = "the RETOUCH release folder or .zip (any level above the TRAINnnn folders)"
CITATION = "Bogunovic et al., IEEE Trans. Med. Imaging 38(8):1858-1874, 2019"


def volume_ids(vendors: Sequence[str] = tuple(VENDORS)) -> list[str]:
    """The training volume ids of ``vendors`` (``TRAIN001`` ...)."""
    return [f"TRAIN{i:03d}" for v in vendors for i in VENDORS[v]]


def vendor_of(volume_id: str) -> str:
    """The vendor of a training volume id (``TRAIN030`` -> ``Spectralis``)."""
    match = _VOLUME_DIR.match(volume_id)
    number = int(match.group(1)) if match else -1
    for vendor, numbers in VENDORS.items():
        if number in numbers:
            return vendor
    raise ValueError(f"{volume_id!r} is not a RETOUCH training volume id (TRAIN001..TRAIN070).")


@dataclass(frozen=True)
class MhdHeader:
    """The MetaImage header fields RETOUCH uses.

    Attributes:
        shape_zyx: voxel array shape as numpy reads it (B-scans, rows, columns).
        dtype: voxel dtype (byte order applied).
        spacing_xyz_mm: ``ElementSpacing`` as stored (lateral, axial, B-scan) in mm.
        data_file: the ``ElementDataFile`` name (relative to the header's folder).
        header_size: bytes to skip at the start of the data file.
    """

    shape_zyx: tuple[int, int, int]
    dtype: np.dtype
    spacing_xyz_mm: tuple[float, float, float]
    data_file: str
    header_size: int


def _fields(release: Release, name: str) -> dict[str, str]:
    try:
        text = release.read_bytes(name).decode("latin-1")
    except (OSError, KeyError) as err:
        raise ValueError(
            f"MetaImage header {release.where(name)} could not be read ({err})."
        ) from err
    fields = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip()] = value.strip()
    return fields


def read_mhd_header(release: Release, name: str) -> MhdHeader:
    """Parses a 3-D MetaImage ``.mhd`` header (``name`` in ``release``).

    Raises:
        ValueError: naming the file, for a missing or unsupported key (compressed or local
            data, other than 3 dimensions or one channel).
    """
    f = _fields(release, name)
    where = release.where(name)
    expected = "NDims = 3, DimSize = x y z, ElementType, ElementSpacing, ElementDataFile"
    missing = [k for k in ("DimSize", "ElementType", "ElementDataFile") if k not in f]
    if missing or f.get("NDims", "3") != "3":
        raise ValueError(
            f"{where} is not a 3-D MetaImage header (missing {missing}, NDims "
            f"{f.get('NDims')!r}); expected {expected}."
        )
    if f.get("CompressedData", "False").lower() == "true" or f["ElementDataFile"] == "LOCAL":
        raise ValueError(
            f"{where}: compressed or header-embedded data (CompressedData/ElementDataFile LOCAL) "
            "is not used by RETOUCH and not supported; expected a separate uncompressed .raw."
        )
    if f.get("ElementNumberOfChannels", "1") != "1":
        raise ValueError(f"{where}: {f['ElementNumberOfChannels']} channels; expected 1.")
    if f["ElementType"] not in _MET_TYPES:
        raise ValueError(
            f"{where}: ElementType {f['ElementType']!r} unknown; expected one of "
            f"{sorted(_MET_TYPES)}."
        )
    try:
        x, y, z = (int(v) for v in f["DimSize"].split())
        spacing = tuple(float(v) for v in f.get("ElementSpacing", "nan nan nan").split())
        sx, sy, sz = spacing
        header_size = int(f.get("HeaderSize", "0"))
    except ValueError as err:
        raise ValueError(f"{where}: malformed DimSize/ElementSpacing/HeaderSize ({err}).") from err
    msb = f.get("BinaryDataByteOrderMSB", f.get("ElementByteOrderMSB", "False")).lower() == "true"
    dtype = np.dtype(_MET_TYPES[f["ElementType"]]).newbyteorder(">" if msb else "<")
    return MhdHeader((z, y, x), dtype, (sx, sy, sz), f["ElementDataFile"], header_size)


def read_mhd(
    source: str | Path | Release, name: str | None = None
) -> tuple[np.ndarray, MhdHeader]:
    """Reads a MetaImage volume (``.mhd`` plus its data file) as a native-endian ``(z, y, x)``
    array.

    Args:
        source: the release holding the header, or the header's own path.
        name: the header's name in ``source`` (a release); None when ``source`` is the path.

    Raises:
        ValueError: naming the file, for a missing, truncated or oversized data file.
    """
    if name is None:
        path = Path(source)
        with Release(path.parent, "the folder of a MetaImage header") as folder:
            return read_mhd(folder, path.name)
    release = source if isinstance(source, Release) else Release(source, _WHAT)
    header = read_mhd_header(release, name)
    raw_name = join(posixpath.dirname(name), header.data_file)
    where, raw = release.where(name), release.where(raw_name)
    if not release.exists(raw_name):
        raise ValueError(f"{where} names data file {header.data_file!r}, which is missing.")
    data = release.read_bytes(raw_name)
    offset = header.header_size if header.header_size >= 0 else None
    count = int(np.prod(header.shape_zyx))
    need = count * header.dtype.itemsize
    if offset is None:  # HeaderSize = -1: the voxels are the file's last bytes
        offset = len(data) - need
    held = len(data) - max(offset, 0)
    if offset < 0 or held != need:
        state = "truncated" if held < need or offset < 0 else "longer than expected"
        z, y, x = header.shape_zyx
        raise ValueError(
            f"{raw} is {state}: it holds {max(held, 0)} bytes of voxels but "
            f"{release.basename(name)} promises {need} (DimSize {x} {y} {z} of "
            f"{header.dtype.name}, HeaderSize {header.header_size}). Download the volume again."
        )
    array = np.frombuffer(data, header.dtype, count, offset).reshape(header.shape_zyx)
    return array.astype(header.dtype.newbyteorder("="), copy=False), header


def find_volumes(source: str | Path | Release) -> dict[str, str]:
    """The ``TRAINnnn`` folders of a release (or release folder or archive), by volume id.

    Raises:
        FileNotFoundError: if ``source`` is missing.
        ValueError: if ``source`` is one volume's folder (wrong level), holds no volume within
            four levels, or holds a volume twice.
    """
    release = source if isinstance(source, Release) else Release(source, _WHAT)
    if release.exists("oct.mhd"):
        raise ValueError(
            f"{release.source} is a single volume folder; pass the folder (or archive) that "
            f"holds the TRAINnnn folders, e.g. the one above {_LAYOUT}."
        )

    def volume(folder: str) -> str | None:
        name = release.basename(folder)
        # a TRAINnnn folder without oct.mhd is e.g. a TEST folder of another release part
        return (
            name if _VOLUME_DIR.match(name) and release.exists(join(folder, "oct.mhd")) else None
        )

    return release.find_folders(volume, 4, "RETOUCH training volume (TRAINnnn/oct.mhd)", _LAYOUT)


def read_volume(release: Release, folder: str) -> tuple[list[BScanRecord], dict[str, Any]]:
    """Reads one ``TRAINnnn`` folder into B-scan records and volume metadata.

    Raises:
        ValueError: naming the file, for a missing reference, an unsupported dtype, shapes
            that differ or labels outside 0..3.
    """
    volume_id = release.basename(folder)
    oct_name, ref_name = join(folder, "oct.mhd"), join(folder, "reference.mhd")
    oct_node, ref_node = release.where(oct_name), release.where(ref_name)
    if not release.exists(ref_name):
        raise ValueError(
            f"{ref_node} is missing: every RETOUCH training volume has reference.mhd/.raw."
        )
    image, header = read_mhd(release, oct_name)
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"{oct_node}: ElementType gives {image.dtype}; RETOUCH B-scans are MET_UCHAR or "
            "MET_USHORT."
        )
    labels, _ = read_mhd(release, ref_name)
    if labels.shape != image.shape:
        raise ValueError(
            f"{ref_node} has shape (z, y, x) {labels.shape} but {oct_node} has {image.shape}."
        )
    values = np.unique(labels)
    if not np.isin(values, range(len(CLASS_NAMES))).all():
        raise ValueError(
            f"{ref_node}: label values {values.tolist()}; RETOUCH documents 0 background, "
            "1 IRF, 2 SRF, 3 PED."
        )
    sx, sy, sz = header.spacing_xyz_mm
    spacing = (sy * 1000.0, sx * 1000.0, sz * 1000.0)
    records = [
        BScanRecord(
            image=np.ascontiguousarray(image[z]),
            mask=labels[z].astype(np.uint8),
            case_id=f"{volume_id}_{z:03d}",
            volume_id=volume_id,
            bscan_index=z,
            spacing_um=spacing,
            subject_id=volume_id,
        )
        for z in range(image.shape[0])
    ]
    meta = {
        "vendor": vendor_of(volume_id),
        "shape_zyx": list(image.shape),
        "dtype": image.dtype.name,
        "spacing_xyz_mm": list(header.spacing_xyz_mm),
        "fluid_present": [CLASS_NAMES[int(v)] for v in values if v > 0],
        "source": release.where(folder),
    }
    return records, meta


def prepare_retouch(
    source: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    vendors: Sequence[str] = tuple(VENDORS),
) -> PrepareSummary:
    """Prepares the RETOUCH training volumes of ``vendors`` into ``out_dir``.

    Args:
        source: the release folder or archive (any level above the ``TRAINnnn`` folders).
        out_dir: output folder (``<paths.data_dir>/retouch``).
        overwrite: replace a folder prepared with other settings.
        vendors: which vendors to prepare (default all three).

    Returns:
        The summary; volumes of ``vendors`` absent from the release are listed as missing.

    Raises:
        FileNotFoundError, ValueError: naming the file or setting at fault.
    """
    unknown = sorted(set(vendors) - set(VENDORS))
    if unknown or not vendors:
        raise ValueError(f"vendors={list(vendors)}: choose among {list(VENDORS)}.")
    with Release(source, _WHAT) as release:
        found = find_volumes(release)
        wanted = volume_ids([v for v in VENDORS if v in vendors])
        writer = PreparedWriter(
            out_dir,
            "retouch",
            {"vendors": [v for v in VENDORS if v in vendors]},
            num_classes=len(CLASS_NAMES),
            overwrite=overwrite,
        )
        writer.write_volumes(
            [v for v in wanted if v in found], lambda v: read_volume(release, found[v])
        )
        return writer.finish(missing=[v for v in wanted if v not in found])


def _fold_groups(k: int) -> Iterator[tuple[str, int]]:
    """``(volume id, group)``: within each vendor, the i-th volume goes to group ``i % k``."""
    for vendor in VENDORS:
        for i, volume_id in enumerate(volume_ids([vendor])):
            yield volume_id, i % k


def split_specs() -> dict[str, dict[str, Any]]:
    """The published RETOUCH split files (``splits/retouch/<protocol>.json``), by volume.

    - ``kfold``: 5 folds stratified by vendor: within each vendor the i-th volume (by number)
      is in group ``i % 5``; fold f tests group f, validates on group f+1 (wrapping), trains on
      the rest.
    - ``lovo``: leave one vendor out, fold 0/1/2 tests Cirrus/Spectralis/Topcon; the other two
      vendors' group-4 volumes (one in five) validate, the rest train.
    """
    groups = dict(_fold_groups(5))
    common = {"dataset": "retouch", "source": CITATION, "unit": "volume"}
    kfold = rotating_folds(groups, 5)
    lovo = []
    for f, vendor in enumerate(VENDORS):
        test = volume_ids([vendor])
        rest = [v for v in groups if v not in test]
        val = [v for v in rest if groups[v] == 4]
        train = [v for v in rest if groups[v] != 4]
        lovo.append({"fold": f, "test_vendor": vendor, "train": train, "val": val, "test": test})
    return {
        "kfold": {
            **common,
            "protocol": "kfold",
            "description": "5-fold by volume, stratified by vendor: within each vendor the i-th "
            "volume is in group i % 5; fold f tests group f, validates on group (f+1) % 5.",
            "folds": kfold,
        },
        "lovo": {
            **common,
            "protocol": "lovo",
            "description": "Leave one vendor out: folds 0/1/2 test Cirrus/Spectralis/Topcon; "
            "group 4 (i % 5 == 4 within each vendor) of the other two vendors validates.",
            "folds": lovo,
        },
    }
