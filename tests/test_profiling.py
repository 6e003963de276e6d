"""Profiling helpers on tiny nets with known costs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from octseg.profiling import (
    benchmark_models,
    count_flops,
    count_parameters,
    time_forward,
    time_forward_backward,
)
from tests.conftest import REPO_ROOT


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
from octseg.profiling import peak_rss_delta_mb
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


REQUIRED_KEYS = {"model", "params", "flops", "cpu_fwd_ms", "cpu_fwdbwd_ms", "peak_mem_mb"}


def test_benchmark_models_rows_carry_the_documented_keys() -> None:
    rows = benchmark_models(["unet_small"], shape=(1, 1, 64, 64), repeats=1)
    assert len(rows) == 1 and "error" not in rows[0], rows
    assert REQUIRED_KEYS <= set(rows[0])
    assert rows[0]["model"] == "unet_small" and rows[0]["params"] == 1_942_442
    assert rows[0]["cpu_fwd_ms"] > 0 and rows[0]["cpu_fwdbwd_ms"] > 0


def test_benchmark_models_reports_an_unknown_config_as_an_error_row() -> None:
    rows = benchmark_models(["no_such_model"], shape=(1, 1, 32, 32), repeats=1)
    assert rows[0]["model"] == "no_such_model" and "error" in rows[0]


@pytest.mark.slow
def test_benchmark_script_prints_a_models_key_with_json() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--models", "unet_small",
         "--skip-trunk", "--json"],
        capture_output=True, text=True, check=True,
    )
    rows = json.loads(out.stdout)["models"]
    assert [r["model"] for r in rows] == ["unet_small"] and REQUIRED_KEYS <= set(rows[0])
