"""PadToDivisor: any B-scan size in, logits of that size out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from octseg.models.base import SegOutput
from octseg.models.wrappers import PadToDivisor, pad_to_divisor


class _Strict(nn.Module):
    """Fails unless H, W are multiples of (8, 4) (and square when asked)."""

    size_divisor = (8, 4)
    requires_square = False

    def __init__(self, square: bool = False) -> None:
        super().__init__()
        self.requires_square = square
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> SegOutput:
        h, w = x.shape[-2:]
        self.seen.append((h, w))
        if h % 8 or w % 4 or (self.requires_square and h != w):
            raise RuntimeError(f"bad size {h}x{w}")
        return SegOutput(logits=x.repeat(1, 3, 1, 1), aux={"deep_supervision": [x[..., ::2, ::2]],
                                                           "full": x})


@pytest.mark.parametrize("hw", [(496, 523), (13, 7), (32, 32)])
def test_pads_per_axis_and_crops_back(hw) -> None:
    net = _Strict()
    x = torch.randn(2, 1, *hw)
    out = PadToDivisor(net)(x)
    assert out.logits.shape == (2, 3, *hw)
    # Image content keeps its coordinates (padding at bottom/right only).
    assert torch.equal(out.logits[:, :1], x)
    ph, pw = net.seen[-1]
    assert ph % 8 == 0 and pw % 4 == 0 and ph - hw[0] < 8 and pw - hw[1] < 4
    assert out.aux["full"].shape[-2:] == hw  # full-resolution aux cropped too
    assert out.aux["deep_supervision"][0].shape[-2:] == (ph // 2, pw // 2)  # others untouched


def test_square_requirement() -> None:
    net = _Strict(square=True)
    out = PadToDivisor(net)(torch.randn(1, 1, 30, 50))
    assert out.logits.shape[-2:] == (30, 50)
    assert net.seen[-1][0] == net.seen[-1][1] and net.seen[-1][0] % 8 == 0


def test_reflect_falls_back_when_pad_exceeds_size() -> None:
    x = torch.randn(1, 1, 3, 3)
    padded, hw = pad_to_divisor(x, 16)
    assert padded.shape[-2:] == (16, 16) and hw == (3, 3)


def test_plain_tensor_networks_are_wrapped() -> None:
    conv = nn.Conv2d(1, 4, 3, padding=1)
    out = PadToDivisor(conv, size_divisor=16)(torch.randn(1, 1, 20, 21))
    assert isinstance(out, SegOutput) and out.logits.shape == (1, 4, 20, 21)


def test_minimum_size_is_honoured() -> None:
    net = _Strict()
    net.min_hw = (24, 9)
    out = PadToDivisor(net)(torch.randn(1, 1, 5, 5))
    assert out.logits.shape[-2:] == (5, 5)
    assert net.seen[-1] == (24, 12)  # at least 24 x 9, then multiples of (8, 4)


def test_compiled_keeps_the_padding_settings_and_shares_parameters() -> None:
    net = nn.Conv2d(1, 2, 3, padding=1)
    wrapper = PadToDivisor(net, size_divisor=(16, 8), requires_square=True, mode="constant")
    compiled = wrapper.compiled()  # torch.compile is lazy: nothing compiles until a call
    assert isinstance(compiled, PadToDivisor) and compiled.net is not net
    settings = (compiled.size_divisor, compiled.requires_square, compiled.mode)
    assert settings == ((16, 8), True, "constant")
    assert all(a is b for a, b in zip(compiled.parameters(), wrapper.parameters(), strict=True))
