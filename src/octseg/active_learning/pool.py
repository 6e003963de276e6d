"""The labelled part of an active-learning pool: a training dataset whose labels are revealed
pixel by pixel (unrevealed pixels read ``ignore_index``, so no loss or metric counts them)."""

from __future__ import annotations

import copy
import io

import numpy as np
from torch.utils.data import Dataset

from octseg.data.base import InMemorySegDataset, RepeatedDataset, SegSample

__all__ = ["RevealedLabelDataset", "pack_masks", "unpack_masks", "unwrap_pool"]


def unwrap_pool(dataset: Dataset) -> tuple[InMemorySegDataset, int]:
    """The in-memory dataset under a training dataset and its repetitions per epoch.

    Raises:
        TypeError: if the training data is not an :class:`InMemorySegDataset` (every
            OCTSeg DataModule builds one), optionally repeated.
    """
    repeats = 1
    while isinstance(dataset, RepeatedDataset):
        repeats *= dataset.repeats
        dataset = dataset.dataset
    if isinstance(dataset, RevealedLabelDataset):
        return dataset.pool, dataset.repeats
    if not isinstance(dataset, InMemorySegDataset):
        raise TypeError(
            f"Active learning needs the training part as an InMemorySegDataset (labels held in "
            f"memory, revealed pixel by pixel), got {type(dataset).__name__}; use a DataModule "
            "built on octseg.data.base.SegDataModule."
        )
    return dataset, repeats


class RevealedLabelDataset(Dataset):
    """The scans of ``pool`` with at least one revealed pixel, labels only where revealed.

    Masking happens on the stored label maps, before augmentation, so crops and flips move
    revealed and unrevealed pixels together. The pool itself is not modified (a shallow copy
    holds the masked labels), and :attr:`transform` is the pool's, so the DataModule re-seeds
    the augmentation every epoch as usual.

    Args:
        pool: the training dataset with every label (the oracle).
        revealed: one bool ``[H, W]`` per pool scan, True where the label is revealed; the
            arrays are shared, call :meth:`refresh` after changing them.
        ignore_index: the label of unrevealed pixels.
        repeats: passes over the labelled scans per epoch (the DataModule's ``train_repeats``).
        samples_per_epoch: a fixed epoch length in samples (cycling over the labelled scans),
            instead of ``repeats`` passes. The labelled scans grow from one or two to dozens
            over the rounds; with a fixed length every round trains the same number of steps,
            so a round's result reflects what was labelled, not how long it trained.

    Raises:
        ValueError: if ``revealed`` does not match the pool's scans and sizes, a scan has no
            label map, or ``samples_per_epoch`` is not positive.
    """

    def __init__(
        self,
        pool: InMemorySegDataset,
        revealed: list[np.ndarray],
        ignore_index: int,
        repeats: int = 1,
        samples_per_epoch: int | None = None,
    ) -> None:
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(
                f"samples_per_epoch must be a positive number of samples or null, got "
                f"{samples_per_epoch} (callbacks.active_learning.samples_per_epoch)."
            )
        if len(revealed) != len(pool):
            raise ValueError(
                f"revealed has {len(revealed)} maps for a pool of {len(pool)} scans."
            )
        for cid, mask, rev in zip(pool.case_ids, pool.masks, revealed, strict=True):
            if mask is None:
                raise ValueError(
                    f"Pool scan {cid!r} has no label map; active learning reveals labels of "
                    "labelled training scans only."
                )
            if rev.shape != mask.shape[:2]:
                raise ValueError(
                    f"Pool scan {cid!r}: revealed map {rev.shape}, labels {mask.shape[:2]}."
                )
        self.pool = pool
        self.revealed = revealed
        self.ignore_index = int(ignore_index)
        self.repeats = int(repeats)
        self.samples_per_epoch = samples_per_epoch
        self._view = copy.copy(pool)
        self.indices: list[int] = []
        self.refresh()

    @property
    def transform(self):  # noqa: ANN201 - the pool's augmentation, whatever its type
        """The pool's training augmentation (re-seeded per epoch by the DataModule)."""
        return self._view.transform

    def refresh(self) -> None:
        """Re-reads :attr:`revealed`: masked labels and the list of scans with labels."""
        masks = []
        for mask, rev in zip(self.pool.masks, self.revealed, strict=True):
            fill = np.asarray(self.ignore_index, dtype=mask.dtype)
            masks.append(np.where(rev, mask, fill))
        self._view.masks = masks
        self.indices = [i for i, rev in enumerate(self.revealed) if rev.any()]

    def __len__(self) -> int:
        if self.samples_per_epoch is not None and self.indices:
            return int(self.samples_per_epoch)
        return len(self.indices) * self.repeats

    def __getitem__(self, index: int) -> SegSample:
        return self._view[self.indices[index % len(self.indices)]]


def pack_masks(masks: dict[str, np.ndarray]) -> bytes:
    """Bool maps by name as a compressed ``.npz`` (bytes), for checkpoints and round files."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v, dtype=bool) for k, v in masks.items()})
    return buf.getvalue()


def unpack_masks(data: bytes) -> dict[str, np.ndarray]:
    """The inverse of :func:`pack_masks`."""
    with np.load(io.BytesIO(data)) as npz:
        return {k: npz[k].astype(bool) for k in npz.files}
