"""Profiling helpers on tiny nets with known costs."""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

from octseg.utils.profiling import (
    count_flops,
    count_parameters,
    time_forward,
    time_forward_backward,
)


class _Conv(nn.Module):
    size_divisor = 1
    requires_square = False

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_parameters_and_flops_of_a_single_conv() -> None:
    net = _Conv()
    assert count_parameters(net) == 36
    # 2 FLOPs per multiply-add: 2 * (4 outputs * 9 taps) per pixel.
    assert count_flops(net, (1, 1, 10, 12)) == 2 * 4 * 9 * 10 * 12


def test_timings_are_positive_per_sample() -> None:
    net = _Conv()
    assert time_forward(net, (2, 1, 16, 16), repeats=2) > 0
    assert time_forward_backward(net, (2, 1, 16, 16), repeats=2) > 0
    assert time_forward(net, (1, 1, 16, 16), repeats=1, channels_last=True, bf16=True) > 0


_RSS_SCRIPT = """
import time, torch
from octseg.utils.profiling import peak_rss_delta_mb
def allocate():
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB of float32, touched
    block.add_(1)
    time.sleep(0.05)
print(peak_rss_delta_mb(allocate))
"""


def test_peak_rss_sees_a_large_allocation_in_a_fresh_process() -> None:
    # In-process RSS is only meaningful before the allocator holds freed memory, which is why
    # benchmark_models measures every model in its own subprocess; the test does the same.
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True, check=True
    )
    assert float(out.stdout.strip().splitlines()[-1]) > 32
