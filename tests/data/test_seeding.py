"""Augmentation streams differ per DDP rank and per worker, and reproduce per (seed, rank)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only

from octseg.data.base import BScanRecord, SegDataModule
from octseg.data.seeding import derive_seed, seed_worker
from octseg.data.transforms import TorchSeededTransform, build_augmentation

PIPELINE = {"hflip_p": 0.5, "affine_p": 1.0, "rotate": 10, "crop_size": [24, 24]}


def scan() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (48, 48), dtype=np.uint8), rng.integers(0, 9, (48, 48), np.uint8)


def stream(seed: int, rank: int) -> list[np.ndarray]:
    """Four augmented masks drawn in the main process of rank ``rank``."""
    image, mask = scan()
    torch.manual_seed(seed)
    wrapped = TorchSeededTransform(build_augmentation(**PIPELINE), rank=rank)
    return [wrapped(image=image, mask=mask)["mask"] for _ in range(4)]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=False))


def test_transform_streams_differ_per_rank_and_repeat_per_rank() -> None:
    assert same(stream(7, 0), stream(7, 0)) and same(stream(7, 1), stream(7, 1))
    assert not same(stream(7, 0), stream(7, 1))
    assert not same(stream(7, 0), stream(8, 0))


def test_transform_reads_the_rank_lightning_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    image, mask = scan()

    def draws(rank: int) -> list[np.ndarray]:
        monkeypatch.setattr(rank_zero_only, "rank", rank)
        torch.manual_seed(3)
        wrapped = TorchSeededTransform(build_augmentation(**PIPELINE))
        return [wrapped(image=image, mask=mask)["mask"] for _ in range(4)]

    assert same(draws(1), draws(1)) and not same(draws(0), draws(1))


def test_seed_worker_mixes_rank_and_worker() -> None:
    def worker_seed(base: int, worker_id: int, rank: int) -> int:
        torch.manual_seed(base + worker_id)  # what torch does in a worker
        seed_worker(worker_id, rank=rank)
        return torch.initial_seed()

    seeds = {(w, r): worker_seed(11, w, r) for w in (0, 1) for r in (0, 1)}
    assert len(set(seeds.values())) == 4
    assert worker_seed(11, 1, 1) == seeds[(1, 1)]
    assert derive_seed(11, 0) != derive_seed(11, 1) and 0 <= derive_seed(11, 0) < 2**32


class _Module(SegDataModule):
    def read_volumes(self):
        image, mask = scan()
        yield [BScanRecord(image, mask, f"s{k}", f"v{k % 2}") for k in range(4)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_datamodule_train_batches_differ_per_rank(
    tmp_path, monkeypatch: pytest.MonkeyPatch, num_workers: int
) -> None:
    split = tmp_path / "split.json"
    split.write_text('{"unit": "volume", "folds": [{"train": ["v0", "v1"]}]}')

    def epoch(rank: int) -> torch.Tensor:
        monkeypatch.setattr(rank_zero_only, "rank", rank)
        torch.manual_seed(5)
        dm = _Module(batch_size=2, num_workers=num_workers, split=str(split),
                     train_transform=build_augmentation(**PIPELINE))  # fmt: skip
        return torch.cat([b["mask"] for b in dm.train_dataloader()])

    rank0, rank1 = epoch(0), epoch(1)
    assert torch.equal(rank0, epoch(0)) and not torch.equal(rank0, rank1)
