"""Input-size adaptation, so that no user sees a shape error for a legal B-scan size."""

from __future__ import annotations

import math

import torch
from torch import nn

from octseg.models.base import SegOutput, as_seg_output
from octseg.utils.tensors import pad_bottom_right

__all__ = ["PadToDivisor", "pad_to_divisor"]


def _crop_like(value: object, h: int, w: int, full_h: int, full_w: int) -> object:
    """Crops full-resolution tensors (and lists of them) back to ``h x w``; leaves others."""
    if isinstance(value, torch.Tensor) and value.dim() >= 2:
        if value.shape[-2:] == (full_h, full_w):
            return value[..., :h, :w]
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_crop_like(v, h, w, full_h, full_w) for v in value)
    return value


def _per_axis(divisor: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(divisor, int):
        return divisor, divisor
    dh, dw = (int(d) for d in divisor)
    return dh, dw


def pad_to_divisor(
    x: torch.Tensor,
    divisor: int | tuple[int, int],
    square: bool = False,
    mode: str = "reflect",
    min_hw: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pads ``x [B, C, H, W]`` at the bottom and right to multiples of ``divisor``.

    Args:
        x: input batch.
        divisor: H and W are padded up to multiples of it; a pair ``(div_h, div_w)`` sets
            each axis (networks with anisotropic pooling, e.g. nnU-Net-style plans).
        square: also pad the shorter side so that H == W.
        mode: ``"reflect"`` (falls back to ``"replicate"`` where the pad exceeds the size) or
            ``"constant"`` (zeros).
        min_hw: smallest padded ``(H, W)`` (e.g. networks whose bottleneck normalisation needs
            more than one spatial element).

    Returns:
        The padded batch and the original ``(H, W)``.
    """
    h, w = x.shape[-2:]
    div_h, div_w = _per_axis(divisor)
    min_h, min_w = min_hw or (1, 1)
    ph = max(h, min_h) - h
    pw = max(w, min_w) - w
    ph += -(h + ph) % div_h
    pw += -(w + pw) % div_w
    if square:
        side = max(h + ph, w + pw)
        side += -side % math.lcm(div_h, div_w)
        ph, pw = side - h, side - w
    return pad_bottom_right(x, ph, pw, mode), (h, w)


class PadToDivisor(nn.Module):
    """Wraps a network so that it accepts any ``H x W``.

    The input is padded (reflect by default) to at least the network's ``min_hw`` (if it has
    one), then to its ``size_divisor`` (and to a square where ``requires_square``), the network
    runs, and every full-resolution output is cropped back. Padding at the bottom/right keeps the
    image content at the same coordinates.

    Args:
        net: the network; its ``size_divisor`` and ``requires_square`` class attributes are read
            unless given here.
        size_divisor: overrides ``net.size_divisor`` (an int, or ``(div_h, div_w)``).
        requires_square: overrides ``net.requires_square``.
        mode: padding mode, see :func:`pad_to_divisor`.
    """

    def __init__(
        self,
        net: nn.Module,
        size_divisor: int | tuple[int, int] | None = None,
        requires_square: bool | None = None,
        mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.net = net
        divisor = size_divisor or getattr(net, "size_divisor", 1)
        self.size_divisor = _per_axis(divisor)
        self.requires_square = bool(
            getattr(net, "requires_square", False) if requires_square is None else requires_square
        )
        self.min_hw = getattr(net, "min_hw", None)
        self.mode = mode

    def compiled(self) -> PadToDivisor:
        """The same wrapper around ``torch.compile(self.net)`` (parameters shared).

        Padding and cropping stay in eager mode, so the compiled graph only sees padded shapes:
        B-scans of many widths round to a few padded sizes and recompile rarely.
        """
        return PadToDivisor(
            torch.compile(self.net), self.size_divisor, self.requires_square, self.mode
        )

    def forward(self, x: torch.Tensor) -> SegOutput:
        padded, (h, w) = pad_to_divisor(
            x, self.size_divisor, self.requires_square, self.mode, self.min_hw
        )
        out = as_seg_output(self.net(padded))
        full_h, full_w = padded.shape[-2:]
        if (full_h, full_w) == (h, w):
            return out
        return SegOutput(
            logits=out.logits[..., :h, :w],
            aux={k: _crop_like(v, h, w, full_h, full_w) for k, v in out.aux.items()},
            reg=out.reg,
        )
