"""Building blocks shared by the AI-Challenger 2018, Kermany 2018, OCT-C8 and OCTID parsers:
finding a release's files by pattern (releases are read with :mod:`octseg.data.release`),
preparing image-level sets (B-scans with a class, no pixel labels) and the DataModule that
selects classes.

Image-level sets are prepared into OCTSeg's prepared layout (:mod:`octseg.data.prepared`) as
unlabelled B-scans; each volume's ``meta`` holds ``class`` (the image-level class) and
``part`` (the release folder it came from: ``train``, ``val`` or ``test``).
:class:`ImageLevelDataModule` keeps the classes asked for (``dataset.classes``, or
``dataset.train_classes`` for the training part only, e.g. healthy-only training for anomaly
detection), adds each sample's class as ``class_index`` and understands split files with
``"rule": "release_part"``: the release's own folders decide the parts, and a subject found in
two of them is refused.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from octseg.data.base import BScanRecord, SegSample
from octseg.data.prepared import PreparedDataModule, PreparedWriter, PrepareSummary
from octseg.data.release import Release

__all__ = [
    "ImageItem",
    "ImageLevelDataModule",
    "find_parts",
    "prepare_image_level",
    "safe_id",
]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(name: str) -> str:
    """A file-name-safe id: runs of characters outside ``[A-Za-z0-9._-]`` become ``_``."""
    return _UNSAFE.sub("_", name).strip("_") or "_"


@dataclass(frozen=True)
class ImageItem:
    """One B-scan of an image-level release, as a parser finds it.

    Attributes:
        path: the file within the release (:attr:`Release.names`).
        part: the release part it is in: ``train``, ``val`` or ``test``.
        image_class: its image-level class (canonical name, e.g. ``NORMAL``).
        subject_id: the patient, or the image's own id when the release names none.
        volume_id: the images prepared together (one patient's images of one class and part,
            or the image alone).
        case_id: the scan's unique name (the file name without extension, made safe).
        bscan_index: its number within the patient (-1 when unknown).
    """

    path: str
    part: str
    image_class: str
    subject_id: str
    volume_id: str
    case_id: str
    bscan_index: int = -1


def prepare_image_level(
    source: str | Path,
    what: str,
    find_items: Callable[[Release], Sequence[ImageItem]],
    out_dir: str | Path,
    dataset: str,
    classes: Sequence[str],
    parts: Sequence[str],
    overwrite: bool = False,
    spacing_um: Sequence[float] | None = None,
) -> PrepareSummary:
    """Prepares an image-level release: its B-scans (unlabelled) in the prepared layout, one
    volume (``ImageItem.volume_id``) at a time; volumes already there are skipped.

    Args:
        source: the release folder or ``.zip`` as downloaded.
        what: what ``source`` should be, for errors.
        find_items: the dataset's parser, ``release -> every B-scan to prepare``.
        out_dir: the dataset folder.
        dataset: the dataset's config name.
        classes: the dataset's image-level classes, in ``class_index`` order (stored in the
            marker).
        parts: the release parts the release should hold; ``<part>/<class>`` groups without
            an image are listed as missing (a partial download).
        overwrite: replace a folder prepared with other settings.
        spacing_um: ``(axial, lateral, bscan)`` of every volume, or None (unknown).

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: on an unreadable image, or a volume whose scans disagree on subject,
            class or part.
    """
    with Release(source, what) as release:
        items = find_items(release)
        return _write_image_level(
            release, items, out_dir, dataset, {"image_classes": list(classes)}, overwrite,
            spacing_um, _missing_groups(items, parts, classes),
        )  # fmt: skip


def _write_image_level(
    release: Release,
    items: Sequence[ImageItem],
    out_dir: str | Path,
    dataset: str,
    settings: dict[str, Any],
    overwrite: bool,
    spacing_um: Sequence[float] | None,
    missing: Sequence[str],
) -> PrepareSummary:
    writer = PreparedWriter(out_dir, dataset, settings, num_classes=1, overwrite=overwrite)
    volumes: dict[str, list[ImageItem]] = {}
    for item in items:
        volumes.setdefault(item.volume_id, []).append(item)
    for volume_id, members in volumes.items():
        first = members[0]
        for m in members[1:]:
            if (m.subject_id, m.image_class, m.part) != (
                first.subject_id,
                first.image_class,
                first.part,
            ):
                raise ValueError(
                    f"{release.where(m.path)} and {release.where(first.path)} both map to volume "
                    f"{volume_id!r} but differ in subject, class or release part."
                )

    def read(volume_id: str) -> tuple[list[BScanRecord], dict[str, Any]]:
        members = sorted(volumes[volume_id], key=lambda m: (m.bscan_index, m.case_id))
        records = [
            BScanRecord(
                image=release.read_grey(m.path, colour="luma"),
                mask=None,
                case_id=m.case_id,
                volume_id=volume_id,
                bscan_index=m.bscan_index,
                spacing_um=None if spacing_um is None else tuple(spacing_um),
                subject_id=m.subject_id,
            )
            for m in members
        ]
        meta = {"class": members[0].image_class, "part": members[0].part,
                "files": [m.path for m in members]}  # fmt: skip
        return records, meta

    writer.write_volumes(sorted(volumes), read)
    return writer.finish(missing=missing)


class _WithClassIndex(Dataset):
    """Adds ``class_index`` (int64 scalar) to each sample of a dataset (repeats included)."""

    def __init__(self, dataset: Dataset, class_indices: Sequence[int]) -> None:
        self.dataset, self.class_indices = dataset, list(class_indices)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> SegSample:
        sample = dict(self.dataset[index])
        sample["class_index"] = torch.tensor(self.class_indices[index % len(self.class_indices)])
        return sample  # type: ignore[return-value]


def _read_volume_meta(data_dir: Path, volume_id: str) -> dict[str, Any]:
    path = data_dir / "volumes" / volume_id / "volume.json"
    meta = json.loads(path.read_text()).get("meta", {})
    if "class" not in meta or "part" not in meta:
        raise ValueError(
            f"{path} holds no image-level class/part in its meta; this folder was not prepared "
            "by an image-level preparation script. Re-run it."
        )
    return meta


class ImageLevelDataModule(PreparedDataModule):
    """The DataModule of prepared image-level sets: class selection, the class of each sample
    (``class_index``, its position in ``image_classes``) and release-part splits.

    Args:
        data_dir: the prepared dataset folder.
        dataset: the dataset's config name.
        image_classes: every image-level class of the dataset, in ``class_index`` order.
        classes: keep only these classes in every part (None: all).
        train_classes: keep only these classes in the training part (None: those of
            ``classes``); e.g. ``[NORMAL]`` trains on healthy scans and tests on all.
        **kwargs: :class:`PreparedDataModule` arguments (``split``, ``fold``, ...).

    Raises:
        ValueError: if ``classes`` or ``train_classes`` name a class not in ``image_classes``.
    """

    has_pixel_labels = False

    def __init__(
        self,
        data_dir: str | Path,
        dataset: str,
        image_classes: Sequence[str],
        classes: Sequence[str] | None = None,
        train_classes: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, dataset, **kwargs)
        self.image_classes = [str(c) for c in image_classes]
        self.classes = self._check_classes(classes, "classes")
        self.train_classes = self._check_classes(train_classes, "train_classes")
        self.volume_meta: dict[str, dict[str, Any]] = {}

    def _check_classes(self, classes: Sequence[str] | None, setting: str) -> set[str] | None:
        if classes is None:
            return None
        chosen = {str(c) for c in ([classes] if isinstance(classes, str) else classes)}
        unknown = sorted(chosen - set(self.image_classes))
        if unknown or not chosen:
            raise ValueError(
                f"dataset.{setting}={sorted(chosen)} names unknown classes {unknown}; "
                f"{self.dataset_name} has {self.image_classes}."
            )
        return chosen

    def read_volumes(self) -> Iterator[list[BScanRecord]]:
        """The volumes of the selected classes (their meta lands in :attr:`volume_meta`)."""
        return self._of_selected_classes(super().read_volumes())

    def read_volume_headers(self) -> Iterator[list[BScanRecord]]:
        """The headers of the selected classes' volumes (no pixels decoded)."""
        return self._of_selected_classes(super().read_volume_headers())

    def _of_selected_classes(
        self, volumes: Iterator[list[BScanRecord]]
    ) -> Iterator[list[BScanRecord]]:
        for volume in volumes:
            meta = _read_volume_meta(self.data_dir, volume[0].volume_id)
            if meta["class"] not in self.image_classes:
                raise ValueError(
                    f"Volume {volume[0].volume_id!r} in {self.data_dir} has class "
                    f"{meta['class']!r}, not one of {self.image_classes} (dataset.image_classes)."
                )
            if self.classes is None or meta["class"] in self.classes:
                self.volume_meta[volume[0].volume_id] = meta
                yield volume

    def release_parts(self, records: Sequence[BScanRecord]) -> list[str]:
        """The release part (``meta.part``) of each B-scan's volume."""
        return [self.volume_meta[r.volume_id]["part"] for r in records]

    def keep_in_training(self, record: BScanRecord) -> bool:
        """Only the classes of ``train_classes`` train (all selected ones when unset)."""
        return (
            self.train_classes is None
            or self.volume_meta[record.volume_id]["class"] in self.train_classes
        )

    def make_dataset(self, records: Sequence[BScanRecord], part: str) -> Dataset:
        """The base dataset, each sample with its ``class_index``."""
        class_ids = [
            self.image_classes.index(self.volume_meta[r.volume_id]["class"]) for r in records
        ]
        return _WithClassIndex(super().make_dataset(records, part), class_ids)

    def build_datasets(self) -> dict[str, Dataset]:
        """The base's datasets (split, training class filter), logged with the classes."""
        datasets = super().build_datasets()
        log.info(
            "%s classes %s (train %s)", type(self).__name__,
            sorted(self.classes or self.image_classes),
            sorted(self.train_classes or self.classes or self.image_classes),
        )  # fmt: skip
        return datasets


def find_parts(
    files: Sequence[str],
    pattern: re.Pattern[str],
    title: str,
    expected: str,
    wrong_level: Callable[[str], bool] | None = None,
) -> list[tuple[str, re.Match[str]]]:
    """The release files matching ``pattern`` (searched at any folder depth), with the match.

    Args:
        files: the release's files.
        pattern: a regular expression matched with ``search`` against each path.
        title: the dataset's name for messages.
        expected: the layout expected, for messages.
        wrong_level: tells a file seen when the user passed a folder one level too deep.

    Raises:
        ValueError: if nothing matches (naming the folder level expected).
    """
    matches = [(f, m) for f in files if (m := pattern.search(f))]
    if matches:
        return matches
    if wrong_level is not None and any(wrong_level(f) for f in files):
        raise ValueError(
            f"The {title} source is one folder level too deep: pass the folder that holds "
            f"{expected}, not a folder inside it."
        )
    raise ValueError(
        f"No {title} image found; expected {expected} (in a folder or a .zip as downloaded). "
        f"Found {len(files)} files, e.g. {list(files[:3])}."
    )


def _missing_groups(
    items: Sequence[ImageItem], parts: Sequence[str], classes: Sequence[str]
) -> list[str]:
    """``<part>/<class>`` folders of the release that hold no image (a partial download)."""
    found = {(i.part, i.image_class) for i in items}
    return [f"{p}/{c}" for p in parts for c in classes if (p, c) not in found]
