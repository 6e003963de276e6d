"""Random streams for data loading that differ per process rank and DataLoader worker.

``seed_everything`` gives every DDP rank the same global seed, and torch derives a worker's seed
from it as ``base_seed + worker_id``; without the rank, rank 0 and rank 1 would replay the same
augmentations. Every seed used for augmentation here is derived from ``(seed, rank, worker)``
with numpy's ``SeedSequence``, so the streams are distinct per rank and per worker and still
reproducible from the global seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sized

import numpy as np
import torch
from torch.utils.data import RandomSampler

__all__ = ["EpochRandomSampler", "derive_seed", "process_rank", "seed_worker"]


def process_rank() -> int:
    """The global rank of this process: the one Lightning's strategy sets
    (``rank_zero_only.rank``), which before the strategy starts comes from the ``RANK`` /
    ``LOCAL_RANK`` / ``SLURM_PROCID`` environment variables, else 0."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def derive_seed(seed: int, rank: int, worker_id: int = -1, epoch: int = 0) -> int:
    """A 32-bit seed mixed from a base seed, a process rank, a worker id and an epoch.

    Args:
        seed: the base seed (e.g. ``torch.initial_seed()``).
        rank: the global process rank.
        worker_id: the DataLoader worker (-1 for the main process).
        epoch: the training epoch (0 outside training).

    Returns:
        A seed in ``[0, 2**32)``; different ``(seed, rank, worker_id, epoch)`` give unrelated
        seeds.
    """
    entropy = [int(seed) % 2**64, int(rank), int(worker_id) + 1, int(epoch)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def seed_worker(worker_id: int, rank: int | None = None) -> None:
    """``worker_init_fn`` of every OCTSeg DataLoader: re-seeds torch, numpy and ``random`` in
    a worker from the loader's base seed, the worker id and the process rank.

    torch's own per-worker seed (read afterwards by ``torch.initial_seed()``, e.g. by
    :class:`~octseg.data.transforms.TorchSeededTransform`) is replaced as well, so every
    consumer in the worker sees the rank.

    Args:
        worker_id: the DataLoader worker id.
        rank: the global rank; None reads :func:`process_rank` (pass it explicitly where
            workers are spawned rather than forked, as the DataModule does).
    """
    rank = process_rank() if rank is None else int(rank)
    base_seed = torch.initial_seed() - worker_id  # torch seeds a worker with base + worker_id
    seed = derive_seed(base_seed, rank, worker_id)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class EpochRandomSampler(RandomSampler):
    """A random order that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each training epoch; the DataModule also starts the
    sampler at the trainer's current epoch, because the first batches of a (resumed) fit are
    drawn before that call. A run resumed from an end-of-epoch checkpoint therefore sees exactly
    the order of the uninterrupted run (a plain ``RandomSampler`` draws its order from the
    global RNG, which restarts from ``seed`` on resume). Under DDP Lightning replaces it, as any
    ``RandomSampler``, with a ``DistributedSampler``, whose order is also a function of seed and
    epoch.

    Args:
        data_source: the dataset.
        seed: the base seed.
        epoch: the first epoch.
        on_epoch: called with the epoch whenever it is set (the DataModule re-seeds the
            training augmentation with it).
    """

    def __init__(
        self,
        data_source: Sized,
        seed: int,
        epoch: int = 0,
        on_epoch: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(data_source, generator=torch.Generator())
        self.seed = int(seed)
        self.on_epoch = on_epoch
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Fixes the order of epoch ``epoch``."""
        self.epoch = int(epoch)
        self.generator.manual_seed(derive_seed(self.seed, rank=0, epoch=self.epoch))
        if self.on_epoch is not None:
            self.on_epoch(self.epoch)
