"""Building blocks shared by every OCTSeg dataset: the sample and volume contracts, an in-memory
dataset, a per-sample padding collate and a DataModule base class.

**Sample contract** (one B-scan, :class:`SegSample`)::

    {
        "image": float32 [C, H, W],      # intensities scaled to [0, 1], then normalised
        "mask": int64 [H, W],            # class labels, ``ignore_index`` where unannotated;
                                         # absent for an unlabelled B-scan
        "case_id": str,                  # unique scan name, e.g. "Subject_09_03"
        "volume_id": str,                # volume the scan belongs to
        "volume_index": int64 scalar,    # integer id of the volume (for metric aggregation)
        "bscan_index": int64 scalar,     # position within the volume, -1 when unknown
        "orig_hw": int64 [2],            # (H, W) before any batch padding
        "spacing_um": float32 [3],       # (axial, lateral, between B-scans) micrometres per
                                         # pixel; NaN for an unknown B-scan distance; absent
                                         # when the dataset knows no spacing
    }

**Batch** (:class:`PadCollate`): the same keys stacked (strings as lists), every sample padded
on its own to the largest ``H x W`` of the batch, plus ``labelled`` (bool ``[B]``). ``mask``
is present when at least one sample of the batch has one; the rows of unlabelled samples are
then all ``ignore_index``, so they count in no loss or metric. A batch of unlabelled samples
only has no ``mask``.

**Volume contract**: a reader (:class:`VolumeReader`) yields the :class:`BScanRecord`\\ s of one
volume at a time, each with the volume's own spacing; :func:`dataset_from_records` turns records
into a dataset, and :class:`SegDataModule` splits them by subject or volume with a published
split file (:mod:`octseg.data.splits`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NotRequired, Protocol, TypedDict

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from octseg.data.seeding import EpochRandomSampler, process_rank, seed_worker
from octseg.data.splits import (
    PARTS,
    RELEASE_PART_RULE,
    load_split,
    partition,
    resolve_release_parts,
)
from octseg.data.transforms import TorchSeededTransform
from octseg.utils.tensors import pad_bottom_right

__all__ = [
    "BScanRecord",
    "InMemorySegDataset",
    "PadCollate",
    "RepeatedDataset",
    "SegDataModule",
    "SegSample",
    "VolumeReader",
    "apply_label_map",
    "dataset_from_records",
    "labelled_subset",
    "seed_worker",
]

log = logging.getLogger(__name__)

Transform = Callable[..., dict[str, Any]]
# Image dtypes and the divisor that scales them to [0, 1]; float images are taken as scaled.
_INTENSITY_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class SegSample(TypedDict):
    """One B-scan as returned by every OCTSeg dataset (see the module docstring)."""

    image: torch.Tensor
    mask: NotRequired[torch.Tensor]
    case_id: str
    volume_id: str
    volume_index: torch.Tensor
    bscan_index: torch.Tensor
    orig_hw: torch.Tensor
    spacing_um: NotRequired[torch.Tensor]


@dataclass
class BScanRecord:
    """One B-scan of a volume, as a reader yields it.

    Attributes:
        image: ``[H, W]`` (or ``[H, W, C]``) uint8, uint16 or float in [0, 1].
        mask: integer labels ``[H, W]``, or None for an unlabelled B-scan.
        case_id: unique scan name.
        volume_id: the volume it belongs to.
        bscan_index: its position within the volume (-1 when unknown).
        spacing_um: the volume's ``(axial, lateral, between B-scans)`` micrometres per pixel
            (NaN for an unknown B-scan distance), or None to use the DataModule's
            ``spacing_um``.
        subject_id: the subject (patient) of the volume; defaults to ``volume_id``.
    """

    image: np.ndarray
    mask: np.ndarray | None
    case_id: str
    volume_id: str
    bscan_index: int = -1
    spacing_um: tuple[float, float, float] | None = None
    subject_id: str | None = None

    def __post_init__(self) -> None:
        if self.subject_id is None:
            self.subject_id = self.volume_id


class VolumeReader(Protocol):
    """Anything that yields a dataset's B-scans volume by volume (one sequence per volume)."""

    def read_volumes(self) -> Iterable[Sequence[BScanRecord]]: ...


def _spacing_triple(spacing_um: Sequence[float], setting: str) -> tuple[float, float, float]:
    values = [float(v) for v in spacing_um]
    if len(values) == 2:
        values.append(math.nan)
    if len(values) != 3 or not all(v > 0 for v in values[:2]) or values[2] <= 0:
        raise ValueError(
            f"{setting} must be [axial, lateral] or [axial, lateral, bscan] micrometres (> 0, "
            f"bscan may be NaN = unknown), got {list(spacing_um)!r}."
        )
    return values[0], values[1], values[2]


class InMemorySegDataset(Dataset):
    """B-scans held in memory in their stored dtype, decoded once (OCT sets are small).

    Args:
        images: arrays ``[H, W]`` (or ``[H, W, C]``): uint8 (scaled by 1/255), uint16 (by
            1/65535) or float already in [0, 1].
        masks: integer label arrays ``[H, W]`` of the same size as their image; None (no scan
            is labelled) or None entries (that scan is not) for unlabelled B-scans.
        case_ids: a unique name per scan.
        volume_ids: the volume (subject) of each scan.
        transform: an albumentations-style callable ``transform(image=..., mask=...) -> dict``
            (``transform(image=...)`` for an unlabelled scan) applied to the stored arrays
            (training augmentation), or None.
        mean: intensity mean subtracted after scaling to [0, 1].
        std: intensity standard deviation divided by after scaling to [0, 1].
        bscan_indices: position of each scan within its volume (default -1 = unknown).
        spacing_um: ``(axial, lateral, bscan)`` micrometres per pixel of each scan, or None
            when unknown (then samples carry no ``spacing_um``).

    Raises:
        ValueError: on sequences of different lengths, an image and mask of different sizes or
            an image dtype other than uint8, uint16 or float.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None] | None,
        case_ids: Sequence[str],
        volume_ids: Sequence[str],
        transform: Transform | None = None,
        mean: float = 0.0,
        std: float = 1.0,
        bscan_indices: Sequence[int] | None = None,
        spacing_um: Sequence[Sequence[float]] | None = None,
    ) -> None:
        masks = [None] * len(images) if masks is None else list(masks)
        bscan_indices = [-1] * len(images) if bscan_indices is None else list(bscan_indices)
        lengths = [len(images), len(masks), len(case_ids), len(volume_ids), len(bscan_indices)]
        if spacing_um is not None:
            lengths.append(len(spacing_um))
        if len(set(lengths)) != 1:
            raise ValueError(
                "images, masks, case_ids, volume_ids, bscan_indices (and spacing_um) must have "
                f"equal lengths, got {lengths}."
            )
        for img, msk, cid in zip(images, masks, case_ids, strict=False):
            if msk is not None and img.shape[:2] != msk.shape[:2]:
                raise ValueError(
                    f"Scan {cid!r}: image is {img.shape[:2]} but mask is {msk.shape[:2]}; "
                    "an image and its mask must have the same height and width."
                )
            if img.dtype not in _INTENSITY_SCALE and img.dtype.kind != "f":
                raise ValueError(
                    f"Scan {cid!r}: image dtype {img.dtype}; expected uint8, uint16 or float "
                    "in [0, 1] (convert it in the dataset's reader)."
                )
        self.images = list(images)
        self.masks = masks
        self.case_ids = list(case_ids)
        self.volume_ids = list(volume_ids)
        self.bscan_indices = [int(i) for i in bscan_indices]
        self.spacing_um = None
        if spacing_um is not None:
            rows = [[float(v) for v in s] for s in spacing_um]
            self.spacing_um = (
                torch.tensor(rows, dtype=torch.float32) if rows else torch.empty(0, 3)
            )
            if self.spacing_um.dim() != 2 or self.spacing_um.shape[1] != 3:
                raise ValueError(
                    f"spacing_um must hold (axial, lateral, bscan) per scan, got shape "
                    f"{tuple(self.spacing_um.shape)}."
                )
        self.volume_names = sorted(set(self.volume_ids))
        self._volume_index = {v: i for i, v in enumerate(self.volume_names)}
        self.transform = transform
        self.mean = float(mean)
        self.std = float(std)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> SegSample:
        image, mask = self.images[index], self.masks[index]
        if self.transform is not None:
            data = {"image": image} if mask is None else {"image": image, "mask": mask}
            out = self.transform(**data)
            image, mask = out["image"], out.get("mask", mask)
        scale = _INTENSITY_SCALE.get(np.asarray(image).dtype, 1.0)
        image_t = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
        image_t = image_t.unsqueeze(0) if image_t.dim() == 2 else image_t.permute(2, 0, 1)
        image_t = (image_t / scale - self.mean) / self.std
        sample: SegSample = {
            "image": image_t,
            "case_id": self.case_ids[index],
            "volume_id": self.volume_ids[index],
            "volume_index": torch.tensor(self._volume_index[self.volume_ids[index]]),
            "bscan_index": torch.tensor(self.bscan_indices[index]),
            "orig_hw": torch.tensor(image_t.shape[-2:]),
        }
        if mask is not None:
            sample["mask"] = torch.as_tensor(np.ascontiguousarray(mask), dtype=torch.int64)
        if self.spacing_um is not None:
            sample["spacing_um"] = self.spacing_um[index]
        return sample


def dataset_from_records(
    records: Sequence[BScanRecord],
    transform: Transform | None = None,
    mean: float = 0.0,
    std: float = 1.0,
    default_spacing_um: Sequence[float] | None = None,
) -> InMemorySegDataset:
    """Builds an :class:`InMemorySegDataset` from reader records.

    Args:
        records: the B-scans (any order; case ids must be unique).
        transform: training augmentation, or None.
        mean: intensity mean after scaling to [0, 1].
        std: intensity standard deviation after scaling to [0, 1].
        default_spacing_um: ``(axial, lateral[, bscan])`` for records without their own
            spacing, or None.

    Returns:
        The dataset; its samples carry ``spacing_um`` when every record has one (its own or
        the default).

    Raises:
        ValueError: on duplicate case ids, or when some records have a spacing and others none.
    """
    counts = Counter(r.case_id for r in records)
    duplicates = sorted(cid for cid, n in counts.items() if n > 1)
    if duplicates:
        raise ValueError(f"Case ids {duplicates} occur more than once; case ids must be unique.")
    default = None
    if default_spacing_um is not None:
        default = _spacing_triple(default_spacing_um, "dataset.datamodule.spacing_um")
    spacings = [r.spacing_um if r.spacing_um is not None else default for r in records]
    unknown = [r.case_id for r, s in zip(records, spacings, strict=False) if s is None]
    if unknown and len(unknown) != len(records):
        raise ValueError(
            f"Scans {unknown[:5]} have no spacing while others do; set "
            "dataset.datamodule.spacing_um so every scan has one."
        )
    return InMemorySegDataset(
        images=[r.image for r in records],
        masks=[r.mask for r in records],
        case_ids=[r.case_id for r in records],
        volume_ids=[r.volume_id for r in records],
        transform=transform,
        mean=mean,
        std=std,
        bscan_indices=[r.bscan_index for r in records],
        spacing_um=None if unknown else spacings,
    )


def _label_lookup(label_map: Sequence[int] | None) -> np.ndarray | None:
    """Checks ``dataset.datamodule.label_map`` and returns it as an int64 array (or None)."""
    if label_map is None:
        return None
    values = list(label_map)
    if not values or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in values
    ):
        raise ValueError(
            f"dataset.datamodule.label_map must list one new label (an integer >= 0) per "
            f"original label 0..K-1, got {values!r}."
        )
    return np.asarray(values, dtype=np.int64)


def apply_label_map(
    mask: np.ndarray, lookup: np.ndarray, ignore_index: int, case_id: str = "?"
) -> np.ndarray:
    """Maps every label ``k`` of ``mask`` to ``lookup[k]``; ``ignore_index`` stays.

    Args:
        mask: integer label map.
        lookup: new label per original label (``dataset.datamodule.label_map``).
        ignore_index: unannotated value, left as it is.
        case_id: scan name for the error message.

    Returns:
        The remapped mask, in the dtype of ``mask`` (or int64 when the new labels need it).

    Raises:
        ValueError: if ``mask`` holds a label the lookup does not cover.
    """
    labels = np.unique(mask)
    labels = labels[labels != ignore_index]
    bad = labels[(labels < 0) | (labels >= len(lookup))]
    if bad.size:
        raise ValueError(
            f"Scan {case_id!r} has labels {bad.tolist()} that dataset.datamodule.label_map "
            f"(length {len(lookup)}) does not map; give one entry per label 0..{labels.max()}."
        )
    table = np.full(max(len(lookup), int(mask.max(initial=0)) + 1), ignore_index, np.int64)
    table[: len(lookup)] = lookup
    out = table[mask.astype(np.int64)]
    out[mask == ignore_index] = ignore_index
    fits = mask.dtype.kind in "ui" and int(out.max(initial=0)) <= np.iinfo(mask.dtype).max
    return out.astype(mask.dtype if fits else np.int64)


#: What happens to the training B-scans outside the labelled fraction.
UNLABELLED_POLICIES = ("keep", "drop")


def labelled_subset(
    records: Sequence[BScanRecord], fraction: float, seed: int = 0
) -> tuple[list[bool], dict[str, Any]]:
    """Chooses which labelled B-scans keep their masks, by subject, for semi-supervised runs.

    The target is ``n = max(1, floor(fraction * N + 0.5))`` of the ``N`` labelled records
    (records without a mask are never candidates). Subjects are taken whole, in an order drawn
    from ``seed``, while they fit in ``n``; the remainder comes from the next subject in that
    order as *contiguous* B-scans of one of its volumes (sorted by ``bscan_index``, then
    ``case_id``, starting at its first B-scan), so labelled B-scans are never scattered at
    random. With Duke's 6 training subjects of 11 B-scans (66), 0.1 keeps 7 B-scans of one
    subject, 0.25 one subject and 6 B-scans of a second (17), 0.5 three subjects (33).

    Args:
        records: the training B-scans.
        fraction: in ``(0, 1]``; 1 keeps every mask.
        seed: draws the subject order (the same seed gives the same subset).

    Returns:
        ``(keep, info)``: per record whether it keeps its mask, and a summary (``fraction``,
        ``labelled``, ``unlabelled``, ``subjects`` taken whole, ``partial`` subject or None).

    Raises:
        ValueError: if ``fraction`` is not in ``(0, 1]``.
    """
    if isinstance(fraction, bool) or not 0.0 < float(fraction) <= 1.0:
        raise ValueError(
            f"dataset.datamodule.labelled_fraction must be in (0, 1], got {fraction!r}; "
            "1.0 keeps every training mask."
        )
    candidates = [i for i, r in enumerate(records) if r.mask is not None]
    keep = [False] * len(records)
    info: dict[str, Any] = {"fraction": float(fraction), "subjects": [], "partial": None}
    target = max(1, math.floor(float(fraction) * len(candidates) + 0.5)) if candidates else 0
    by_subject: dict[str, list[int]] = {}
    for i in candidates:
        by_subject.setdefault(str(records[i].subject_id), []).append(i)
    order = sorted(by_subject)
    permutation = torch.randperm(len(order), generator=torch.Generator().manual_seed(int(seed)))
    left = target
    for subject in (order[k] for k in permutation.tolist()):
        members = by_subject[subject]
        if len(members) <= left:
            info["subjects"].append(subject)
            chosen = members
        elif left > 0:
            # The remainder: the first B-scans of the subject's first volume (then the next).
            members = sorted(
                members,
                key=lambda i: (records[i].volume_id, records[i].bscan_index, records[i].case_id),
            )
            chosen = members[:left]
            info["partial"] = {"subject": subject, "bscans": len(chosen)}
        else:
            break
        for i in chosen:
            keep[i] = True
        left -= len(chosen)
    info["labelled"] = sum(keep)
    info["unlabelled"] = len(records) - info["labelled"]
    return keep, info


class PadCollate:
    """Stacks samples of different sizes, padding each sample on its own to the largest H and W
    of the batch (at the bottom and right, so ``orig_hw`` crops recover it).

    Images are reflect-padded (replicate where a pad exceeds the size), so the network never
    sees a zero strip; masks are padded with ``ignore_index`` and ``weight`` maps with 0, so
    padded pixels count in no loss or metric. Unlabelled samples: see the module docstring.

    Args:
        ignore_index: mask value of padded and unlabelled pixels.

    Raises:
        ValueError: (when called) if the samples do not share the same keys.
    """

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = ignore_index

    def __call__(self, samples: list[SegSample]) -> dict[str, Any]:
        h = max(s["image"].shape[-2] for s in samples)
        w = max(s["image"].shape[-1] for s in samples)
        labelled = [s.get("mask") is not None for s in samples]
        keys = [k for k in samples[0] if k != "mask"]
        for s in samples[1:]:
            if set(s) - {"mask"} != set(keys):
                raise ValueError(
                    f"Samples {samples[0]['case_id']!r} and {s['case_id']!r} have different keys "
                    f"({sorted(keys)} vs {sorted(set(s) - {'mask'})}); a dataset must give every "
                    "sample the same keys."
                )
        batch: dict[str, Any] = {"labelled": torch.tensor(labelled)}
        for key in keys:
            values = [s[key] for s in samples]
            if key == "image":
                values = [self._pad(v, h, w, "reflect") for v in values]
            elif key == "weight":
                values = [self._pad(v, h, w, "constant", 0.0) for v in values]
            batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
        if any(labelled):
            masks = [
                self._pad(s["mask"], h, w, "constant", self.ignore_index)
                if s.get("mask") is not None
                else torch.full((h, w), self.ignore_index, dtype=torch.int64)
                for s in samples
            ]
            batch["mask"] = torch.stack(masks)
        return batch

    @staticmethod
    def _pad(x: torch.Tensor, h: int, w: int, mode: str, value: float = 0.0) -> torch.Tensor:
        return pad_bottom_right(x, h - x.shape[-2], w - x.shape[-1], mode, value)


class RepeatedDataset(Dataset):
    """Presents a dataset ``repeats`` times per epoch (fewer, longer epochs on a tiny set)."""

    def __init__(self, dataset: Dataset, repeats: int) -> None:
        if repeats < 1:
            raise ValueError(
                f"train_repeats must be >= 1, got {repeats} (dataset.datamodule.train_repeats)."
            )
        self.dataset, self.repeats = dataset, int(repeats)

    def __len__(self) -> int:
        return len(self.dataset) * self.repeats

    def __getitem__(self, index: int) -> SegSample:
        return self.dataset[index % len(self.dataset)]


def _batch_size(value: int, setting: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"dataset.datamodule.{setting} must be a positive integer, got {value!r}"
            + (" (null means: same as batch_size)." if setting == "eval_batch_size" else ".")
        )
    return value


class SegDataModule(pl.LightningDataModule):
    """Base DataModule: loaders, padding, seeding, augmentation wiring, repetition and splits.

    A dataset either implements :meth:`read_volumes` (a :class:`VolumeReader`: the base then
    splits the records with the split file and builds the datasets) or overrides
    :meth:`build_datasets` and builds each part with :meth:`make_dataset`.

    Args:
        batch_size: training batch size.
        eval_batch_size: validation/test/predict batch size (full B-scans); None = batch_size.
        num_workers: DataLoader workers.
        ignore_index: mask value for unannotated and padded pixels.
        pin_memory: pin host memory (useful on GPU).
        train_transform: albumentations-style pipeline for training samples, or None; it is
            re-seeded per process, rank and worker (:class:`TorchSeededTransform`).
        mean: intensity mean after scaling to [0, 1].
        std: intensity standard deviation after scaling to [0, 1].
        train_repeats: passes over the training B-scans per epoch.
        spacing_um: ``[axial, lateral]`` micrometres per pixel of scans whose reader gives none,
            or None (unknown).
        bscan_spacing_um: micrometres between B-scans for those scans (None = unknown).
        split: a protocol name under ``split_dir`` or a path to a split JSON file (datasets
            that read volumes); None for datasets that split themselves.
        fold: fold of the split file.
        split_dir: folder of named split files (default ``<repo>/splits/<splits_name>``).
        label_map: new label of every original label ``0..K-1`` (``ignore_index`` stays), or
            None. It gives a coarser view of a dataset, e.g. fluid vs. the rest of a
            layer + fluid set (``conf/dataset/duke_fluid.yaml``); every part is remapped.

        labelled_fraction: fraction of the training B-scans that keep their masks, chosen by
            subject (:func:`labelled_subset`); the others become unlabelled samples (no
            ``mask``). Validation and test are never touched. 1.0 (default) keeps all.
        unlabelled: ``keep`` (semi-supervised: unlabelled training samples stay in the
            training set) or ``drop`` (the labelled-only baseline on the same subset).
        labelled_seed: seed of the labelled subset and of the draw from ``unlabelled_from``
            (the same seed, the same B-scans).
        unlabelled_from: another dataset's DataModule whose training part (its own split and
            class selection) joins this training part as unlabelled B-scans, for
            semi-supervised methods: e.g. Kermany's Spectralis B-scans beside Duke's labelled
            ones (``+dataset@unlabelled=kermany``, composed by ``train.py``). They are read
            with this DataModule's normalisation and augmentation; they keep their own spacing
            (NaN where unknown while this dataset's scans have one). Validation and test are
            never touched. None (default): no other source.
        unlabelled_max_bscans: at most this many B-scans from ``unlabelled_from``, drawn
            uniformly with ``labelled_seed`` (None: all of its training part).

    Raises:
        ValueError: on a batch size < 1, ``train_repeats`` < 1, a malformed spacing or
            ``label_map``, a ``labelled_fraction`` outside ``(0, 1]``, an unknown
            ``unlabelled`` policy, or an ``unlabelled_from`` that cannot serve (not a
            DataModule, on a dataset without label maps, with ``unlabelled: drop``) or an
            ``unlabelled_max_bscans`` < 1.
    """

    #: folder under ``splits/`` holding this dataset's published split files.
    splits_name: str | None = None
    #: whether samples can carry label maps (False for image-level sets: classes only).
    has_pixel_labels = True

    def __init__(
        self,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        ignore_index: int = 255,
        pin_memory: bool = False,
        train_transform: Transform | None = None,
        mean: float = 0.0,
        std: float = 1.0,
        train_repeats: int = 1,
        spacing_um: Sequence[float] | None = None,
        bscan_spacing_um: float | None = None,
        split: str | None = None,
        fold: int = 0,
        split_dir: str | None = None,
        label_map: Sequence[int] | None = None,
        labelled_fraction: float = 1.0,
        unlabelled: str = "keep",
        labelled_seed: int = 0,
        unlabelled_from: SegDataModule | None = None,
        unlabelled_max_bscans: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = _batch_size(batch_size, "batch_size")
        self.eval_batch_size = (
            self.batch_size
            if eval_batch_size is None
            else _batch_size(eval_batch_size, "eval_batch_size")
        )
        if train_repeats < 1:
            raise ValueError(
                f"dataset.datamodule.train_repeats must be >= 1, got {train_repeats}."
            )
        self.num_workers = num_workers
        self.ignore_index = ignore_index
        self.pin_memory = pin_memory
        self.train_transform = train_transform
        self.mean, self.std, self.train_repeats = float(mean), float(std), int(train_repeats)
        self.spacing_um: tuple[float, float, float] | None = None
        if spacing_um is not None:
            bscan = math.nan if bscan_spacing_um is None else float(bscan_spacing_um)
            self.spacing_um = _spacing_triple([*spacing_um, bscan], "dataset.spacing_um")
        self.split, self.fold, self.split_dir = split, int(fold), split_dir
        self.label_map = _label_lookup(label_map)
        self.split_info: dict[str, Any] = {}
        if isinstance(labelled_fraction, bool) or not 0.0 < float(labelled_fraction) <= 1.0:
            raise ValueError(
                f"dataset.datamodule.labelled_fraction must be in (0, 1], got "
                f"{labelled_fraction!r}; 1.0 keeps every training mask."
            )
        if unlabelled not in UNLABELLED_POLICIES:
            raise ValueError(
                f"dataset.datamodule.unlabelled must be one of {list(UNLABELLED_POLICIES)}, got "
                f"{unlabelled!r} (keep: semi-supervised, drop: labelled-only baseline)."
            )
        self.labelled_fraction = float(labelled_fraction)
        self.unlabelled = unlabelled
        self.labelled_seed = int(labelled_seed)
        #: the labelled subset of the training part (:func:`labelled_subset`'s summary).
        self.labelled_info: dict[str, Any] = {}
        self.unlabelled_from = self._check_unlabelled_source(unlabelled_from)
        if unlabelled_max_bscans is not None and (
            isinstance(unlabelled_max_bscans, bool)
            or not isinstance(unlabelled_max_bscans, int)
            or unlabelled_max_bscans < 1
        ):
            raise ValueError(
                "dataset.datamodule.unlabelled_max_bscans must be a positive integer or null "
                f"(all), got {unlabelled_max_bscans!r}."
            )
        self.unlabelled_max_bscans = unlabelled_max_bscans
        #: what was drawn from ``unlabelled_from`` (dataset, B-scans, of how many).
        self.unlabelled_info: dict[str, Any] = {}
        self.datasets: dict[str, Dataset] = {}
        # The training order is a function of (this seed, epoch): EpochRandomSampler.
        self.shuffle_seed = torch.initial_seed()

    # ------------------------------------------------------------------ building datasets
    def read_volumes(self) -> Iterable[Sequence[BScanRecord]]:
        """Yields the B-scans of one volume at a time (override in a reader-based dataset)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement read_volumes() or override build_datasets()."
        )

    def read_volume_headers(self) -> Iterable[Sequence[BScanRecord]]:
        """The B-scans of each volume with their ids, subject and spacing, without decoding
        pixels where the format allows it (then ``image`` is empty and ``mask`` None;
        :meth:`read_pixels` reads them). Splitting and drawing from a large set (Kermany's
        108,309 B-scans) need no pixels. Default: :meth:`read_volumes`."""
        return self.read_volumes()

    def read_pixels(self, records: Sequence[BScanRecord]) -> list[BScanRecord]:
        """``records`` from :meth:`read_volume_headers` with their pixels (default: as they
        are, since the default headers hold them)."""
        return list(records)

    def describe_source(self) -> str:
        """Where the data comes from, for log and error messages."""
        return type(self).__name__

    @property
    def source_name(self) -> str:
        """A short name of the dataset (prefix of its B-scans lent to another dataset)."""
        return str(getattr(self, "dataset_name", None) or type(self).__name__)

    @property
    def has_unlabelled_training_scans(self) -> bool:
        """Whether the training part holds B-scans without masks by setting
        (``labelled_fraction`` < 1 with ``unlabelled: keep``, or ``unlabelled_from``); only
        semi-supervised methods learn from them."""
        partial = self.labelled_fraction < 1.0 and self.unlabelled == "keep"
        return partial or self.unlabelled_from is not None

    def _check_unlabelled_source(self, source: Any) -> SegDataModule | None:
        if source is None:
            return None
        if not isinstance(source, SegDataModule):
            raise ValueError(
                f"dataset.datamodule.unlabelled_from must be an OCTSeg DataModule (compose one "
                f"with +dataset@unlabelled=<name>), got {type(source).__name__}."
            )
        if not self.has_pixel_labels:
            raise ValueError(
                f"{type(self).__name__} holds no label maps, so unlabelled B-scans from "
                f"{source.source_name} have nothing to be semi-supervised with; give them to a "
                "dataset with masks (dataset=duke, hcms, ...)."
            )
        if self.unlabelled == "drop":
            raise ValueError(
                f"dataset.datamodule.unlabelled=drop leaves unlabelled B-scans out, but "
                f"unlabelled_from adds {source.source_name}'s: use unlabelled=keep, or drop "
                "the unlabelled source for the labelled-only baseline."
            )
        return source

    def unlabelled_training_scans(
        self, max_bscans: int | None = None, seed: int = 0
    ) -> tuple[list[BScanRecord], int]:
        """This dataset's training B-scans without masks, for another dataset's
        semi-supervised training (``unlabelled_from``).

        The split is made on :meth:`read_volume_headers`, then at most ``max_bscans`` B-scans
        are drawn uniformly with ``seed`` (in reading order) and only those are decoded, so
        memory holds the draw, not the dataset.

        Returns:
            ``(scans, available)``: the drawn records (``mask`` None) and the size of the
            training part they were drawn from.
        """
        train = self.split_records(headers_only=True)["train"]
        available = len(train)
        if max_bscans is not None and max_bscans < available:
            generator = torch.Generator().manual_seed(int(seed))
            drawn = torch.randperm(available, generator=generator)[:max_bscans]
            train = [train[i] for i in sorted(drawn.tolist())]
        return [replace(r, mask=None) for r in self.read_pixels(train)], available

    def _scans_from_unlabelled_source(self, own: Sequence[BScanRecord]) -> list[BScanRecord]:
        """The B-scans lent by ``unlabelled_from``, ids prefixed with its name and spacing
        made consistent with ``own`` (the training records of this dataset)."""
        source = self.unlabelled_from
        if source is None:
            return []
        if source.describe_source() == self.describe_source():
            raise ValueError(
                f"unlabelled_from reads the same data as this dataset ({self.describe_source()}):"
                " its training part could hold this split's validation or test subjects. Use "
                "dataset.datamodule.labelled_fraction for unlabelled B-scans of the same set."
            )
        scans, available = source.unlabelled_training_scans(
            self.unlabelled_max_bscans, self.labelled_seed
        )
        # Every sample of a batch must carry the same keys: spacing is given to the lent scans
        # when this dataset's scans have one (NaN where the source does not know it).
        with_spacing = self.spacing_um is not None or any(r.spacing_um is not None for r in own)
        unknown = (math.nan, math.nan, math.nan)

        def spacing(r: BScanRecord) -> tuple[float, float, float] | None:
            return (r.spacing_um or source.spacing_um or unknown) if with_spacing else None

        tag = source.source_name
        lent = [
            replace(
                r,
                case_id=f"{tag}.{r.case_id}",
                volume_id=f"{tag}.{r.volume_id}",
                subject_id=f"{tag}.{r.subject_id}",
                spacing_um=spacing(r),
            )
            for r in scans
        ]
        if own and lent and own[0].image.ndim != lent[0].image.ndim:
            raise ValueError(
                f"{tag}'s B-scans ({lent[0].case_id}: shape {lent[0].image.shape}) and this "
                f"dataset's ({own[0].case_id}: {own[0].image.shape}) differ in channels; "
                "unlabelled_from needs a source of the same modality."
            )
        self.unlabelled_info = {
            "dataset": tag, "source": source.describe_source(), "bscans": len(lent),
            "available": available, "max_bscans": self.unlabelled_max_bscans,
        }  # fmt: skip
        log.info(
            "Unlabelled training B-scans from %s: %d of its %d training B-scans "
            "<dataset.datamodule.unlabelled_max_bscans=%s>",
            source.describe_source(), len(lent), available, self.unlabelled_max_bscans,
        )  # fmt: skip
        return lent

    def apply_labelled_fraction(self, records: Sequence[BScanRecord]) -> list[BScanRecord]:
        """The training records with masks removed outside the labelled subset (``unlabelled:
        keep``) or with the unlabelled records left out (``drop``); unchanged at fraction 1
        with ``keep``."""
        if self.labelled_fraction == 1.0 and self.unlabelled == "keep":
            return list(records)
        keep, info = labelled_subset(records, self.labelled_fraction, self.labelled_seed)
        info["unlabelled_policy"] = self.unlabelled
        self.labelled_info = info
        log.info(
            "Training B-scans with masks: %d, unlabelled: %d (%s) <dataset.datamodule."
            "labelled_fraction=%s> (subjects %s whole, partial %s)",
            info["labelled"], info["unlabelled"], self.unlabelled, self.labelled_fraction,
            info["subjects"], info["partial"],
        )  # fmt: skip
        if self.unlabelled == "drop":
            return [r for r, k in zip(records, keep, strict=True) if k]
        return [
            r if k else dataclasses.replace(r, mask=None)
            for r, k in zip(records, keep, strict=True)
        ]

    def make_dataset(self, records: Sequence[BScanRecord], part: str) -> Dataset:
        """A dataset of one part: augmentation, repetition and the labelled fraction
        (:meth:`apply_labelled_fraction`) for ``train``, the DataModule's normalisation, default
        spacing and ``label_map`` for every part."""
        if self.label_map is not None:
            records = [
                r if r.mask is None else replace(r, mask=apply_label_map(
                    r.mask, self.label_map, self.ignore_index, r.case_id))
                for r in records
            ]  # fmt: skip
        if part == "train":
            records = self.apply_labelled_fraction(records)
            records = records + self._scans_from_unlabelled_source(records)
        transform = None
        if part == "train" and self.train_transform is not None:
            transform = self.train_transform
            if not isinstance(transform, TorchSeededTransform):
                transform = TorchSeededTransform(transform)
        dataset = dataset_from_records(records, transform, self.mean, self.std, self.spacing_um)
        if part == "train" and self.train_repeats > 1:
            return RepeatedDataset(dataset, self.train_repeats)
        return dataset

    def release_parts(self, records: Sequence[BScanRecord]) -> list[str]:
        """The release part (``train``, ``test``, ... folder) of each B-scan, for split files
        with ``"rule": "release_part"``; a dataset whose release has no parts refuses them.

        Raises:
            ValueError: always, here (override where the release has parts).
        """
        raise ValueError(
            f"dataset.split={self.split!r} names release parts (rule {RELEASE_PART_RULE!r}) but "
            f"{type(self).__name__} does not know the release part of its B-scans; use a split "
            "file that lists subjects or volumes."
        )

    def load_split_info(self, records: Sequence[BScanRecord]) -> dict[str, Any]:
        """The split of ``records`` (:func:`octseg.data.splits.load_split` names), from
        ``dataset.split``; release parts are resolved into subjects or volumes."""
        if self.split is None:
            raise ValueError(
                f"{type(self).__name__} reads volumes but dataset.split is not set; name a "
                "split file (dataset.split=<protocol> or a path to a .json file)."
            )
        info = load_split(self.split, self.fold, self.split_dir, self.splits_name)
        if info["rule"] == RELEASE_PART_RULE:
            info = resolve_release_parts(
                info, [str(r.subject_id) for r in records], [r.volume_id for r in records],
                self.release_parts(records), self.describe_source(),
            )  # fmt: skip
        return info

    def keep_in_training(self, record: BScanRecord) -> bool:
        """Whether a B-scan of the training part is used (all are, unless overridden)."""
        return True

    def split_records(self, headers_only: bool = False) -> dict[str, list[BScanRecord]]:
        """Each part's B-scans: every volume read (:meth:`read_volume_headers` when
        ``headers_only``), split with the split file (:meth:`load_split_info`, also kept in
        :attr:`split_info`), the training part filtered by :meth:`keep_in_training`."""
        volumes = self.read_volume_headers() if headers_only else self.read_volumes()
        records = [record for volume in volumes for record in volume]
        info = self.load_split_info(records)
        indices = partition(
            [str(r.subject_id) for r in records], [r.volume_id for r in records], info,
            self.describe_source(),
        )  # fmt: skip
        indices["train"] = [i for i in indices["train"] if self.keep_in_training(records[i])]
        self.split_info = {**info, "fold": self.fold}
        log.info(
            "%s split %s fold %d (%s, by %s) from %s: train %s (%d B-scans), val %s (%d), "
            "test %s (%d)",
            type(self).__name__, info["protocol"], self.fold, info["file"], info["unit"],
            self.describe_source(), info["train"], len(indices["train"]), info["val"],
            len(indices["val"]), info["test"], len(indices["test"]),
        )  # fmt: skip
        return {part: [records[i] for i in indices[part]] for part in PARTS}

    def build_datasets(self) -> dict[str, Dataset]:
        """One dataset per non-empty part of :meth:`split_records` (:meth:`make_dataset`);
        called once by :meth:`setup`."""
        parts = self.split_records()
        datasets = {
            part: self.make_dataset(records, part) for part, records in parts.items() if records
        }
        if self.labelled_info:
            self.split_info["labelled"] = self.labelled_info
        if self.unlabelled_info:
            self.split_info["unlabelled_from"] = self.unlabelled_info
        return datasets

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = self.build_datasets()

    # ------------------------------------------------------------------ loaders
    def _set_train_epoch(self, epoch: int) -> None:
        """Gives the training augmentation the epoch (it seeds the epoch's stream)."""
        dataset = self.datasets.get("train")
        while isinstance(dataset, RepeatedDataset):
            dataset = dataset.dataset
        transform = getattr(dataset, "transform", None)
        if isinstance(transform, TorchSeededTransform):
            transform.set_epoch(epoch)

    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        if split not in self.datasets:
            raise KeyError(f"{type(self).__name__} has no {split!r} split.")
        sampler = None
        if train:
            # A resumed fit draws its first batches before Lightning sets the sampler's epoch:
            # start at the trainer's epoch so they are those of the uninterrupted run.
            trainer = getattr(self, "trainer", None)
            sampler = EpochRandomSampler(
                self.datasets[split],
                seed=self.shuffle_seed,
                epoch=trainer.current_epoch if trainer is not None else 0,
                on_epoch=self._set_train_epoch,
            )
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            drop_last=train and len(self.datasets[split]) > self.batch_size,
            num_workers=self.num_workers,
            collate_fn=PadCollate(self.ignore_index),
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # The rank is read here, in the process that owns it, and handed to the workers.
            worker_init_fn=functools.partial(seed_worker, rank=process_rank()),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        """Full-B-scan validation loader; an empty list (Lightning skips validation) when the
        split has no validation part."""
        self.setup()
        return self._loader("val", train=False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
