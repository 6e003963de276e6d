"""DDP: two gloo CPU processes accumulate the same aggregates as one process."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from octseg.metrics.suite import MetricSuite
from tests.metrics.metric_cases import NUM_CLASSES, layered_map, make_suite

FAMILIES = ["overlap", "boundary", "thickness", "topology", "distance", "probabilistic", "fluid"]


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    target = torch.stack([layered_map(shift=s % 3) for s in range(5)])
    target[1, 30:33, 4:9] = 9
    target[3, 30:34, 10:20] = 9
    logits = 3 * torch.nn.functional.one_hot(target, NUM_CLASSES).permute(0, 3, 1, 2).float()
    logits += 2 * torch.randn(logits.shape, generator=gen)
    # per-scan spacing (axial, lateral, B-scan distance): the per-scan rows carry it to the
    # gathered aggregates
    spacing = torch.tensor([[3.87, 11.3, 120.0]] * 2 + [[5.0, 8.0, 100.0]] * 3)
    return logits, target, torch.tensor([0, 0, 1, 1, 2]), spacing


def _suite() -> MetricSuite:
    return make_suite(FAMILIES, bscan_spacing_um=120.0)


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    logits, target, vol, sp = _data()
    suite = _suite()
    # rank 0 gets scans 0, 2, 4 (two batches), rank 1 gets 1, 3 (one batch): unequal counts
    if rank == 0:
        suite.update(logits[[0, 2]], target[[0, 2]], vol[[0, 2]], spacing_um=sp[[0, 2]])
        suite.update(logits[[4]], target[[4]], vol[[4]], spacing_um=sp[[4]])
    else:
        suite.update(logits[[1, 3]], target[[1, 3]], vol[[1, 3]], spacing_um=sp[[1, 3]])
    out = suite.compute()
    idle = _suite()  # a rank that saw no batch must still synchronise and compute
    idle_out = idle.compute() if rank == 0 else idle.compute()
    queue.put((rank, {k: v.item() for k, v in out.items()}, idle_out["dice"].item()))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~30 s on a loaded 2-core machine (process spawn + imports)
def test_two_processes_equal_one_process() -> None:
    logits, target, vol, spacing = _data()
    single = _suite()
    single.update(logits, target, vol, spacing_um=spacing)
    expected = {k: v.item() for k, v in single.compute().items()}
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(
        _worker, args=(_free_port(), queue), nprocs=2, join=True, start_method="spawn"
    )
    results = [queue.get() for _ in range(2)]
    for _, got, idle_dice in results:
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(
                torch.tensor(got[key]),
                torch.tensor(value),
                equal_nan=True,
                rtol=1e-5,
                atol=1e-6,
                msg=key,
            )
        assert idle_dice != idle_dice  # NaN: nothing updated on any rank
