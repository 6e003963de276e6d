"""OCTSeg's prepared layout, shared by every dataset prepared from an official release.

A preparation script (``scripts/prepare_<name>.py``) parses the release into
:class:`~octseg.data.base.BScanRecord`\\ s volume by volume and hands each volume to
:class:`PreparedWriter`; :class:`PreparedDataModule` reads any prepared folder back. Only the
parser is dataset-specific.

Layout of ``<paths.data_dir>/<name>/``::

    octseg_prepared.json            marker, written last: format, version, settings, summary
    volumes/<volume_id>/
        volume.json                 volume_id, subject_id, spacing_um [axial, lateral, bscan],
                                    scans [{case_id, bscan_index, labelled}], meta
        images/<case_id>.png        grey PNG, 8 or 16 bit (native dtype kept)
        masks/<case_id>.png         labels (8 bit; 16 bit when ignore_index > 255); absent when
                                    the scan is unlabelled
        surfaces/<case_id>.npy      optional float32 [S, W]: surface rows per column (NaN untraced)

Writing is streamed and atomic per volume (a volume folder is written under a temporary name and
renamed), so memory holds one volume, an interrupted run leaves no half volume, and a rerun skips
the volumes already there. Volume and case ids may only use ``[A-Za-z0-9._-]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from octseg.data.base import BScanRecord, SegDataModule
from octseg.utils.io import atomic_write_json, atomic_write_npy, atomic_write_png

__all__ = [
    "MARKER_NAME",
    "PREPARED_FORMAT",
    "PREPARED_FORMAT_VERSION",
    "PrepareSummary",
    "PreparedDataModule",
    "PreparedWriter",
    "prepare_main",
    "read_prepared",
    "read_prepared_volume",
]

log = logging.getLogger(__name__)

MARKER_NAME = "octseg_prepared.json"
PREPARED_FORMAT = "octseg-prepared"
PREPARED_FORMAT_VERSION = 1
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")
# The image of a header record (read without pixels).
_NO_PIXELS = np.zeros((0, 0), dtype=np.uint8)


@dataclass
class PrepareSummary:
    """What a preparation run wrote (printed at its end, stored in the marker)."""

    dataset: str
    out_dir: str
    subjects: int = 0
    volumes: int = 0
    bscans: int = 0
    labelled_bscans: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    spacings_um: list[list[float]] = field(default_factory=list)
    skipped_volumes: int = 0
    missing: list[str] = field(default_factory=list)

    def as_text(self) -> str:
        """A short human-readable summary."""
        spacing = "; ".join(
            "x".join("?" if math.isnan(v) else f"{v:g}" for v in s) for s in self.spacings_um
        )
        lines = [
            f"{self.dataset} prepared in {self.out_dir}",
            f"  subjects {self.subjects}, volumes {self.volumes} ({self.skipped_volumes} already "
            f"there), B-scans {self.bscans} ({self.labelled_bscans} labelled)",
            f"  pixels per label: {dict(sorted(self.label_counts.items(), key=lambda kv: int(kv[0])))}",  # noqa: E501
            f"  spacing (axial x lateral x B-scan um): {spacing or 'unknown'}",
        ]
        if self.missing:
            lines.append(f"  missing from the release (not prepared): {self.missing}")
        return "\n".join(lines)


def _check_id(value: str, what: str) -> str:
    if not _SAFE_ID.match(value):
        raise ValueError(
            f"{what} {value!r} may only use letters, digits, '.', '_' and '-' (it names files)."
        )
    return value


def _mask_dtype(ignore_index: int) -> type:
    return np.uint8 if ignore_index <= 255 else np.uint16


def _spacing(values: Sequence[float] | None) -> list[float]:
    if values is None:
        return [math.nan] * 3
    out = [float(v) for v in values] + [math.nan] * (3 - len(values))
    return out[:3]


class PreparedWriter:
    """Writes a dataset in the prepared layout, one volume at a time.

    Args:
        out_dir: the dataset folder (``<paths.data_dir>/<name>``), created if needed.
        dataset: the dataset's config name (``hcms``, ``retouch``, ...), stored in the marker.
        settings: preparation settings (grader, subset, ...) stored in the marker; a folder
            prepared with other settings is refused unless ``overwrite``.
        num_classes: labels must lie in ``[0, num_classes)`` (or equal ``ignore_index``).
        ignore_index: mask value of unannotated pixels.
        overwrite: replace a folder prepared with other settings (its volumes are removed).

    Raises:
        ValueError: if ``out_dir`` holds something else, or was prepared otherwise.
    """

    def __init__(
        self,
        out_dir: str | Path,
        dataset: str,
        settings: Mapping[str, Any],
        num_classes: int,
        ignore_index: int = 255,
        overwrite: bool = False,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.dataset = dataset
        self.settings = {
            "dataset": dataset,
            "num_classes": int(num_classes),
            "ignore_index": int(ignore_index),
            **dict(settings),
        }
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.summary = PrepareSummary(dataset, str(self.out_dir))
        self._subjects: set[str] = set()
        self._spacings: set[tuple[float, ...]] = set()
        self._labels: Counter[int] = Counter()
        marker = self.out_dir / MARKER_NAME
        volumes = self.out_dir / "volumes"
        if marker.is_file():
            stored = _read_marker(marker)
            theirs = {k: stored.get("settings", {}).get(k) for k in self.settings}
            if theirs != self.settings and not overwrite:
                raise ValueError(
                    f"{self.out_dir} was prepared with other settings ({theirs}); requested "
                    f"{self.settings}. Pass --overwrite to replace it, or choose another folder."
                )
            if theirs != self.settings:
                shutil.rmtree(volumes, ignore_errors=True)
            marker.unlink()  # written again, last, when this run finishes
        elif self.out_dir.exists() and any(p.name != "volumes" for p in self.out_dir.iterdir()):
            if not overwrite:
                raise ValueError(
                    f"{self.out_dir} is not empty and holds no {MARKER_NAME}: it is not an OCTSeg "
                    "prepared folder. Choose an empty folder or pass --overwrite."
                )
        volumes.mkdir(parents=True, exist_ok=True)
        for stale in volumes.glob(".tmp-*"):  # left by an interrupted run
            shutil.rmtree(stale, ignore_errors=True)

    def has_volume(self, volume_id: str) -> bool:
        """Whether a complete volume of this id is already there (a rerun skips it)."""
        return (self.out_dir / "volumes" / volume_id / "volume.json").is_file()

    def skip_volume(self, volume_id: str) -> None:
        """Counts a volume already prepared into the summary (call instead of writing it)."""
        meta = json.loads((self.out_dir / "volumes" / volume_id / "volume.json").read_text())
        self._count(meta, None)
        self.summary.skipped_volumes += 1

    def _count(self, meta: Mapping[str, Any], masks: Sequence[np.ndarray | None] | None) -> None:
        self.summary.volumes += 1
        self.summary.bscans += len(meta["scans"])
        self.summary.labelled_bscans += sum(bool(s["labelled"]) for s in meta["scans"])
        self._subjects.add(meta["subject_id"])
        self._spacings.add(tuple(meta["spacing_um"]))
        for label, n in (meta.get("label_counts") or {}).items():
            self._labels[int(label)] += int(n)

    def write_volume(
        self,
        records: Sequence[BScanRecord],
        surfaces: Mapping[str, np.ndarray] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Checks and writes one volume atomically.

        Args:
            records: the volume's B-scans (same ``volume_id``, ``subject_id`` and spacing).
            surfaces: optional ``{case_id: float [S, W]}`` surface rows.
            meta: anything else worth keeping (vendor, eye, grader, ...), JSON-serialisable.

        Raises:
            ValueError: naming the scan, for mixed volumes, size mismatches, labels out of
                range or unsafe ids.
        """
        if not records:
            raise ValueError("write_volume needs at least one B-scan.")
        volume_id = _check_id(records[0].volume_id, "Volume id")
        for r in records:
            if (r.volume_id, r.subject_id) != (volume_id, records[0].subject_id):
                raise ValueError(f"Scan {r.case_id!r} belongs to another volume or subject.")
            _check_id(r.case_id, "Case id")
            if r.image.ndim != 2 or r.image.dtype not in (np.uint8, np.uint16):
                raise ValueError(
                    f"Scan {r.case_id!r}: images are stored as 2-D uint8/uint16, got "
                    f"{r.image.dtype} {r.image.shape}; convert it in the parser."
                )
            if r.mask is not None:
                if r.mask.shape != r.image.shape:
                    raise ValueError(
                        f"Scan {r.case_id!r}: image is {r.image.shape} but mask is {r.mask.shape}."
                    )
                bad = np.setdiff1d(
                    np.unique(r.mask), [*range(self.num_classes), self.ignore_index]
                )
                if bad.size:
                    raise ValueError(
                        f"Scan {r.case_id!r}: labels {bad.tolist()} outside "
                        f"0..{self.num_classes - 1}"
                        f" (and ignore_index {self.ignore_index})."
                    )
        final = self.out_dir / "volumes" / volume_id
        tmp = self.out_dir / "volumes" / f".tmp-{volume_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        labels: Counter[int] = Counter()
        for r in records:
            atomic_write_png(tmp / "images" / f"{r.case_id}.png", r.image)
            if r.mask is not None:
                mask = r.mask.astype(_mask_dtype(self.ignore_index))
                atomic_write_png(tmp / "masks" / f"{r.case_id}.png", mask)
                values, counts = np.unique(mask, return_counts=True)
                labels.update({int(v): int(c) for v, c in zip(values, counts, strict=True)})
            if surfaces and r.case_id in surfaces:
                atomic_write_npy(
                    tmp / "surfaces" / f"{r.case_id}.npy",
                    np.asarray(surfaces[r.case_id], dtype=np.float32),
                )
        info = {
            "volume_id": volume_id,
            "subject_id": str(records[0].subject_id),
            "spacing_um": _spacing(records[0].spacing_um),
            "scans": [
                {
                    "case_id": r.case_id,
                    "bscan_index": int(r.bscan_index),
                    "labelled": r.mask is not None,
                }
                for r in records
            ],
            "label_counts": {str(k): v for k, v in sorted(labels.items())},
            "meta": dict(meta or {}),
        }
        atomic_write_json(tmp / "volume.json", info)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        self._count(info, None)

    def write_volumes(
        self,
        volume_ids: Iterable[str],
        read: Callable[[str], tuple[Any, ...]],
    ) -> None:
        """Writes each volume unless the folder already holds it (a rerun skips it, unread).

        Args:
            volume_ids: the volumes to write, in order.
            read: ``volume_id -> (records, meta)`` or ``(records, surfaces, meta)``, the
                arguments of :meth:`write_volume`.
        """
        for volume_id in volume_ids:
            if self.has_volume(volume_id):
                self.skip_volume(volume_id)
                continue
            *records_surfaces, meta = read(volume_id)
            self.write_volume(*records_surfaces, meta=meta)
            log.info("%s: %s written (%d B-scans)", self.dataset, volume_id,
                     len(records_surfaces[0]))  # fmt: skip
            # Drop this volume before reading the next: memory holds one volume, not two.
            del records_surfaces, meta

    def finish(self, missing: Sequence[str] = ()) -> PrepareSummary:
        """Writes the marker (last) and returns the summary; ``missing`` lists what the
        release lacked (warned about)."""
        self.summary.subjects = len(self._subjects)
        self.summary.spacings_um = [list(s) for s in sorted(self._spacings)]
        self.summary.label_counts = {str(k): v for k, v in sorted(self._labels.items())}
        self.summary.missing = list(missing)
        if missing:
            log.warning("%s: not in the release, not prepared: %s", self.dataset, list(missing))
        if not self.summary.volumes:
            raise ValueError(f"No volume was prepared into {self.out_dir}; check the release.")
        atomic_write_json(
            self.out_dir / MARKER_NAME,
            {
                "format": PREPARED_FORMAT,
                "format_version": PREPARED_FORMAT_VERSION,
                "settings": self.settings,
                "summary": asdict(self.summary),
            },
        )
        return self.summary


def _read_marker(marker: Path) -> dict[str, Any]:
    try:
        meta = json.loads(marker.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{marker} is damaged ({err}); re-run the dataset's preparation script."
        ) from err
    if (meta.get("format"), meta.get("format_version")) != (
        PREPARED_FORMAT,
        PREPARED_FORMAT_VERSION,
    ):
        raise ValueError(
            f"{marker} names format {meta.get('format')!r} version {meta.get('format_version')!r};"
            f" this OCTSeg reads {PREPARED_FORMAT!r} version {PREPARED_FORMAT_VERSION}: re-run "
            "the "
            "preparation script with --overwrite."
        )
    return meta


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.array(img)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} could not be read ({err}); re-run the preparation.") from err


def read_prepared_volume(
    folder: str | Path, pixels: bool = True, case_ids: Collection[str] | None = None
) -> list[BScanRecord]:
    """The B-scans of one prepared volume folder (``volumes/<id>``).

    Args:
        folder: the volume folder.
        pixels: decode images and masks; False gives headers only (``image`` an empty
            array, ``mask`` None) from ``volume.json`` alone.
        case_ids: only these B-scans (None: all).

    Raises:
        FileNotFoundError, ValueError: naming the file at fault.
    """
    folder = Path(folder)
    meta_path = folder / "volume.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{meta_path} is missing or damaged ({err}); re-run the preparation."
        ) from err
    spacing = tuple(float(v) for v in meta["spacing_um"])
    known = not any(math.isnan(v) for v in spacing[:2])
    records = []
    for scan in meta["scans"]:
        cid = scan["case_id"]
        if case_ids is not None and cid not in case_ids:
            continue
        labelled = pixels and scan["labelled"]
        mask = _read_png(folder / "masks" / f"{cid}.png") if labelled else None
        records.append(
            BScanRecord(
                image=_read_png(folder / "images" / f"{cid}.png") if pixels else _NO_PIXELS,
                mask=mask,
                case_id=cid,
                volume_id=meta["volume_id"],
                bscan_index=int(scan["bscan_index"]),
                spacing_um=spacing if known else None,
                subject_id=meta["subject_id"],
            )
        )
    return records


def read_prepared(
    data_dir: str | Path, dataset: str | None = None, pixels: bool = True
) -> Iterator[list[BScanRecord]]:
    """Yields a prepared dataset's volumes one at a time.

    Args:
        data_dir: the dataset folder.
        dataset: the expected dataset name (checked against the marker), or None.
        pixels: decode the B-scans (False: headers only, :func:`read_prepared_volume`).

    Raises:
        FileNotFoundError: if the folder or its marker is missing (with how to prepare it).
        ValueError: if the marker is damaged, of another format or another dataset.
    """
    root = Path(data_dir)
    marker = root / MARKER_NAME
    name = dataset or root.name
    if not marker.is_file():
        raise FileNotFoundError(
            f"{root} holds no prepared dataset ({MARKER_NAME} missing). Prepare the official "
            f"release with `python scripts/prepare_{name}.py <release> {root}`, or point "
            "paths.data_dir at the folder that holds it."
        )
    meta = _read_marker(marker)
    if dataset is not None and meta["settings"].get("dataset") != dataset:
        raise ValueError(
            f"{root} holds dataset {meta['settings'].get('dataset')!r}, not {dataset!r}; check "
            "paths.data_dir and the dataset= choice."
        )
    for folder in sorted((root / "volumes").iterdir()):
        if folder.is_dir() and not folder.name.startswith("."):
            yield read_prepared_volume(folder, pixels)


class PreparedDataModule(SegDataModule):
    """The DataModule of every dataset in the prepared layout: volumes read from
    ``data_dir``, split by subject or volume with ``splits/<dataset>/<split>.json``.

    Args:
        data_dir: the prepared dataset folder (``${paths.data_dir}/<name>``).
        dataset: the dataset's config name (checked against the marker; names the split folder).
        split: a protocol name in ``splits/<dataset>/`` or a path to a split JSON file.
        fold: the split file's fold.
        split_dir: folder of split files (default ``<repo>/splits/<dataset>``).
        **kwargs: :class:`SegDataModule` arguments.
    """

    def __init__(
        self,
        data_dir: str | Path,
        dataset: str,
        split: str = "default",
        fold: int = 0,
        split_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(split=split, fold=fold, split_dir=split_dir, **kwargs)
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.dataset_name = dataset
        self.splits_name = dataset

    def read_volumes(self) -> Iterator[list[BScanRecord]]:
        return read_prepared(self.data_dir, self.dataset_name)

    def read_volume_headers(self) -> Iterator[list[BScanRecord]]:
        """Every volume's B-scans from ``volume.json`` alone (no pixels decoded)."""
        return read_prepared(self.data_dir, self.dataset_name, pixels=False)

    def read_pixels(self, records: Sequence[BScanRecord]) -> list[BScanRecord]:
        """The header records with their images and masks read from the volume folders."""
        volumes: dict[str, list[BScanRecord]] = {}
        for r in records:
            volumes.setdefault(r.volume_id, []).append(r)
        decoded = {
            (volume_id, r.case_id): r
            for volume_id, members in volumes.items()
            for r in read_prepared_volume(
                self.data_dir / "volumes" / volume_id, case_ids={m.case_id for m in members}
            )
        }
        return [decoded[r.volume_id, r.case_id] for r in records]

    def describe_source(self) -> str:
        return f"{self.dataset_name} at {self.data_dir}"


def prepare_main(
    doc: str,
    prepare: Callable[..., PrepareSummary],
    add_options: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """The command line of every ``scripts/prepare_<name>.py``: ``SOURCE OUT_DIR [--overwrite]``
    plus the dataset's own options; runs ``prepare(source, out_dir, overwrite=..., **options)``
    and prints its summary. Bad input ends with ``error: <message>`` and status 1.

    Args:
        doc: the script's docstring (its first paragraph is the description).
        prepare: the dataset's ``prepare_<name>`` function.
        add_options: adds dataset options to the parser (their ``dest`` names are passed on
            as keyword arguments).
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="the official release: folder or archive as downloaded")
    parser.add_argument("out_dir", help="output folder, e.g. <paths.data_dir>/<name>")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a folder prepared with other settings"
    )
    if add_options is not None:
        add_options(parser)
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    source, out_dir = args.pop("source"), args.pop("out_dir")
    try:
        summary = prepare(source, out_dir, **args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary.as_text())
    return 0
