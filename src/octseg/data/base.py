"""Building blocks shared by every OCTSeg dataset: the sample contract, an in-memory dataset,
a padding collate and a DataModule base class.

Sample contract (one B-scan)::

    {
        "image": float32 [C, H, W],      # normalised intensities
        "mask": int64 [H, W],            # class labels; ``ignore_index`` where unannotated
        "case_id": str,                  # unique scan name, e.g. "Subject_09_03"
        "volume_id": str,                # subject / volume the scan belongs to
        "volume_index": int64 scalar,    # integer id of the volume (for metric aggregation)
        "orig_hw": int64 [2],            # (H, W) before any batch padding
    }
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

__all__ = ["InMemorySegDataset", "PadCollate", "SegDataModule", "seed_worker"]


class InMemorySegDataset(Dataset):
    """B-scans held in memory as uint8 arrays, decoded once (OCT sets are small).

    Args:
        images: grayscale uint8 arrays ``[H, W]`` (or ``[H, W, C]``).
        masks: integer label arrays ``[H, W]`` of the same size as their image.
        case_ids: a unique name per scan.
        volume_ids: the volume (subject) of each scan.
        transform: an albumentations-style callable ``transform(image=..., mask=...) -> dict``
            applied to the uint8 arrays (training augmentation), or None.
        mean: intensity mean subtracted after scaling to [0, 1].
        std: intensity standard deviation divided by after scaling to [0, 1].
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        case_ids: Sequence[str],
        volume_ids: Sequence[str],
        transform: Callable[..., dict[str, Any]] | None = None,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        if not (len(images) == len(masks) == len(case_ids) == len(volume_ids)):
            raise ValueError(
                f"images, masks, case_ids and volume_ids must have equal lengths, got "
                f"{len(images)}, {len(masks)}, {len(case_ids)}, {len(volume_ids)}."
            )
        for img, msk, cid in zip(images, masks, case_ids):
            if img.shape[:2] != msk.shape[:2]:
                raise ValueError(
                    f"Scan {cid!r}: image is {img.shape[:2]} but mask is {msk.shape[:2]}; "
                    "an image and its mask must have the same height and width."
                )
        self.images = list(images)
        self.masks = list(masks)
        self.case_ids = list(case_ids)
        self.volume_ids = list(volume_ids)
        self.volume_names = sorted(set(self.volume_ids))
        self._volume_index = {v: i for i, v in enumerate(self.volume_names)}
        self.transform = transform
        self.mean = float(mean)
        self.std = float(std)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.images[index], self.masks[index]
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
        if image_t.dim() == 2:
            image_t = image_t.unsqueeze(0)
        else:
            image_t = image_t.permute(2, 0, 1)
        if np.asarray(image).dtype == np.uint8:
            image_t = image_t / 255.0
        image_t = (image_t - self.mean) / self.std
        mask_t = torch.as_tensor(np.ascontiguousarray(mask), dtype=torch.int64)
        return {
            "image": image_t,
            "mask": mask_t,
            "case_id": self.case_ids[index],
            "volume_id": self.volume_ids[index],
            "volume_index": torch.tensor(self._volume_index[self.volume_ids[index]]),
            "orig_hw": torch.tensor(mask_t.shape[-2:]),
        }


class PadCollate:
    """Stacks samples of different sizes by padding to the largest H and W in the batch.

    Images are zero-padded and masks padded with ``ignore_index`` at the bottom and right, so
    padded pixels never count in losses or metrics; ``orig_hw`` keeps each sample's true size.
    """

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = ignore_index

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        h = max(s["image"].shape[-2] for s in samples)
        w = max(s["image"].shape[-1] for s in samples)
        batch: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            if key in ("image", "mask", "weight"):
                fill = self.ignore_index if key == "mask" else 0
                values = [
                    F.pad(v, (0, w - v.shape[-1], 0, h - v.shape[-2]), value=fill) for v in values
                ]
            if isinstance(values[0], torch.Tensor):
                batch[key] = torch.stack(values)
            else:
                batch[key] = values
        return batch


def seed_worker(worker_id: int) -> None:
    """Seeds numpy and random in each DataLoader worker from torch's per-worker seed, so that
    augmentation is reproducible for a given global seed."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class SegDataModule(pl.LightningDataModule, ABC):
    """Base DataModule: subclasses implement :meth:`build_datasets`; loaders come from here.

    Args:
        batch_size: training batch size.
        eval_batch_size: validation/test/predict batch size (full B-scans).
        num_workers: DataLoader workers.
        ignore_index: mask value for unannotated and padded pixels.
        pin_memory: pin host memory (useful on GPU).
    """

    def __init__(
        self,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        ignore_index: int = 255,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.ignore_index = ignore_index
        self.pin_memory = pin_memory
        self.datasets: dict[str, Dataset] = {}

    @abstractmethod
    def build_datasets(self) -> dict[str, Dataset]:
        """Returns ``{"train": ..., "val": ..., "test": ...}``; called once by :meth:`setup`."""

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = self.build_datasets()

    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        if split not in self.datasets:
            raise KeyError(f"{type(self).__name__} has no {split!r} split.")
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and len(self.datasets[split]) > self.batch_size,
            num_workers=self.num_workers,
            collate_fn=PadCollate(self.ignore_index),
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=seed_worker,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
