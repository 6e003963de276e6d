"""The generic folder dataset (``dataset=folder``): any folders of B-scans and label maps.

Layout under ``data_dir`` (folder names are settings)::

    images/<name>.png|.tif|.tiff|.npy     8/16-bit grey (or float in [0, 1] for .npy)
    labels/<name>.<any of those>          integer label maps 0..K-1 (ignore_index = unlabelled)

Sub-folders are allowed; an image and its label map are matched by their path without the
extension. ``name_pattern`` (a regular expression searched in that path) names the volume
(group ``volume``), the subject (``subject``, default the volume) and the B-scan position
(``bscan``); without it every B-scan is its own volume. Parts come from a split file
(``split``: a path or a protocol name under ``split_dir``) or from ``split_rule``: regular
expressions over subject ids, ``{val: ..., test: ...}``, every other subject training. This
covers OPTIMA, MIAMI, ORC exports and users' own data; the dataset's metadata (class names,
spacing, anatomy) lives in the dataset config (docs/datasets.md, "Your own data").
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from octseg.data.base import BScanRecord, SegDataModule
from octseg.data.splits import PARTS

__all__ = ["EXTENSIONS", "FolderDataModule", "read_array", "rule_split"]

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".tif", ".tiff", ".npy")


def read_array(path: Path) -> np.ndarray:
    """An image or label map as stored (PNG/TIFF through PIL, ``.npy`` through numpy).

    Raises:
        ValueError: naming the file, if it cannot be read or has an unknown extension.
    """
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise ValueError(f"{path}: unknown extension {path.suffix!r}; expected {EXTENSIONS}.")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with Image.open(path) as img:
            array = np.array(img)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} could not be read ({err}).") from err
    if array.dtype == np.int32 and array.size and 0 <= array.min() and array.max() <= 65535:
        array = array.astype(np.uint16)  # PIL opens some 16-bit files as 32-bit integers
    return array


def _image(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if not (np.array_equal(array[..., 0], array[..., 1]) and
                np.array_equal(array[..., 0], array[..., 2])):  # fmt: skip
            raise ValueError(f"{path}: a colour image; B-scans are read as grey, convert it.")
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{path}: image of shape {array.shape}; expected a 2-D grey B-scan.")
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype.kind == "f" and np.nanmin(array) >= 0 and np.nanmax(array) <= 1:
        return array.astype(np.float32)
    raise ValueError(
        f"{path}: image dtype {array.dtype} (range {array.min()}..{array.max()}); expected "
        "uint8, uint16 or float in [0, 1]."
    )


def _label(array: np.ndarray, path: Path, num_classes: int, ignore_index: int) -> np.ndarray:
    if array.ndim != 2 or array.dtype.kind not in "iub":
        raise ValueError(
            f"{path}: label map {array.dtype} {array.shape}; expected a 2-D integer map "
            "(palette or grey PNG/TIFF, integer .npy)."
        )
    bad = np.setdiff1d(np.unique(array), [*range(num_classes), ignore_index])
    if bad.size:
        raise ValueError(
            f"{path}: labels {bad.tolist()[:10]} outside 0..{num_classes - 1} and ignore_index "
            f"{ignore_index}; set dataset.num_classes / dataset.class_names (or "
            "dataset.ignore_index) to match the data."
        )
    return array.astype(np.int64 if ignore_index > 255 else np.uint8)


def _index(folder: Path, setting: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist; set {setting} (a folder under dataset.datamodule.data_dir)"
            " or paths.data_dir."
        )
    files, unknown = {}, []
    for path in sorted(folder.rglob("*")):
        if path.is_dir() or path.name.startswith("."):
            continue
        if path.suffix.lower() not in EXTENSIONS:
            unknown.append(path.relative_to(folder).as_posix())
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in files:
            raise ValueError(f"{files[key]} and {path} have the same name; keep one of them.")
        files[key] = path
    if unknown:
        raise ValueError(
            f"{folder} holds files of unknown type {unknown[:10]}; expected {EXTENSIONS} "
            "(move other files out of the folder)."
        )
    return files


def rule_split(subject_ids: Sequence[str], rule: Mapping[str, str], source: str) -> dict:
    """A split from name rules: subjects matching ``rule['test']`` test, ``rule['val']``
    validate (regular expressions, searched), the others train.

    Returns:
        A :func:`octseg.data.splits.load_split`-style dict (unit ``subject``).

    Raises:
        ValueError: on unknown keys, a subject matching both rules or an empty training part.
    """
    unknown = sorted(set(rule) - {"val", "test"})
    if unknown:
        raise ValueError(
            f"dataset.split_rule has keys {unknown}; expected val and/or test (regexes)."
        )
    parts: dict[str, list[str]] = {part: [] for part in PARTS}
    for subject in sorted(set(subject_ids)):
        hits = [p for p in ("val", "test") if rule.get(p) and re.search(rule[p], subject)]
        if len(hits) > 1:
            raise ValueError(f"Subject {subject!r} matches both val and test of split_rule.")
        parts[hits[0] if hits else "train"].append(subject)
    if not parts["train"]:
        raise ValueError(
            f"dataset.split_rule {dict(rule)} leaves no training subject in {source}."
        )
    return {**parts, "file": f"split_rule {dict(rule)}", "protocol": "split_rule",
            "unit": "subject"}  # fmt: skip


class FolderDataModule(SegDataModule):
    """Any folders of B-scans and label maps, split by subject or volume.

    Args:
        data_dir: the dataset folder.
        num_classes: labels must lie in ``0..num_classes-1`` (or equal ``ignore_index``).
        images: the image folder under ``data_dir``.
        labels: the label folder under ``data_dir``, or None (every B-scan unlabelled).
        name_pattern: regular expression with optional groups ``volume``, ``subject`` and
            ``bscan``, searched in each image's path under ``images`` (without extension).
        allow_unlabelled: keep images without a label map (as unlabelled B-scans) instead of
            stopping.
        split: a split file (path) or a protocol name under ``split_dir``.
        split_rule: ``{val: regex, test: regex}`` over subject ids, instead of ``split``.
        fold: the split file's fold.
        split_dir: folder of named split files.
        **kwargs: :class:`SegDataModule` arguments.
    """

    def __init__(
        self,
        data_dir: str | Path,
        num_classes: int,
        images: str = "images",
        labels: str | None = "labels",
        name_pattern: str | None = None,
        allow_unlabelled: bool = False,
        split: str | None = None,
        split_rule: Mapping[str, str] | None = None,
        fold: int = 0,
        split_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(split=split, fold=fold, split_dir=split_dir, **kwargs)
        if (split is None) == (split_rule is None):
            raise ValueError(
                "dataset=folder needs exactly one of dataset.split (a split file) and "
                f"dataset.split_rule ({{val: regex, test: regex}}); got split={split!r}, "
                f"split_rule={split_rule!r}."
            )
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.num_classes = int(num_classes)
        self.images, self.labels = images, labels
        self.pattern = re.compile(name_pattern) if name_pattern else None
        self.allow_unlabelled = allow_unlabelled
        self.split_rule = dict(split_rule) if split_rule is not None else None

    def describe_source(self) -> str:
        return f"folder dataset at {self.data_dir}"

    def _ids(self, key: str) -> tuple[str, str, int]:
        if self.pattern is None:
            return key.replace("/", "__"), key.replace("/", "__"), -1
        match = self.pattern.search(key)
        if match is None:
            raise ValueError(
                f"Image {key!r} does not match dataset.datamodule.name_pattern "
                f"{self.pattern.pattern!r}."
            )
        groups = match.groupdict()
        # Ids name files and report rows: path separators become "__".
        volume = (groups.get("volume") or key).replace("/", "__")
        subject = (groups.get("subject") or volume).replace("/", "__")
        bscan = groups.get("bscan")
        return volume, subject, int(bscan) if bscan else -1

    def read_volumes(self) -> Iterator[list[BScanRecord]]:
        images = _index(self.data_dir / self.images, "dataset.datamodule.images")
        labels = {}
        if self.labels is not None:
            labels = _index(self.data_dir / self.labels, "dataset.datamodule.labels")
        unmatched_labels = sorted(set(labels) - set(images))
        unmatched_images = [] if self.allow_unlabelled or self.labels is None else sorted(
            set(images) - set(labels))  # fmt: skip
        if unmatched_labels or unmatched_images:
            raise ValueError(
                f"{self.data_dir}: images without a label map {unmatched_images[:10]} and label "
                f"maps without an image {unmatched_labels[:10]} (matched by path without "
                "extension); fix the names, or set dataset.datamodule.allow_unlabelled=true to "
                "keep unlabelled images."
            )
        if not images:
            raise ValueError(f"{self.data_dir / self.images} holds no image.")
        volumes: dict[str, list[BScanRecord]] = defaultdict(list)
        for key, path in images.items():
            volume, subject, bscan = self._ids(key)
            image = _image(read_array(path), path)
            mask = None
            if key in labels:
                mask = _label(read_array(labels[key]), labels[key], self.num_classes,
                              self.ignore_index)  # fmt: skip
                if mask.shape != image.shape:
                    raise ValueError(
                        f"{labels[key]} is {mask.shape} but its image {path} is {image.shape}."
                    )
            case_id = key.replace("/", "__")
            volumes[volume].append(BScanRecord(image, mask, case_id, volume, bscan, None, subject))
        for volume in sorted(volumes):
            owners = sorted({str(r.subject_id) for r in volumes[volume]})
            if len(owners) > 1:
                raise ValueError(
                    f"Volume {volume!r} holds B-scans of subjects {owners}; a volume id must be "
                    "unique in the dataset: let name_pattern's volume group include the subject."
                )
            yield sorted(volumes[volume], key=lambda r: (r.bscan_index, r.case_id))

    def load_split_info(self, records: Sequence[BScanRecord]) -> dict[str, Any]:
        """A split file goes through the base; a ``split_rule`` is applied here."""
        if self.split_rule is None:
            return super().load_split_info(records)
        subjects = [str(r.subject_id) for r in records]
        return rule_split(subjects, self.split_rule, self.describe_source())
