"""Small tensor helpers shared by the data layer and the network wrappers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pad_bottom_right"]


def pad_bottom_right(
    x: torch.Tensor, pad_h: int, pad_w: int, mode: str = "reflect", value: float = 0.0
) -> torch.Tensor:
    """Pads the last two dimensions of ``x`` at the bottom and right.

    Image content keeps its coordinates, so a crop ``[..., :H, :W]`` recovers the input.

    Args:
        x: a tensor ``[..., H, W]`` (``reflect``/``replicate`` need ``[C, H, W]`` or
            ``[B, C, H, W]``).
        pad_h: rows added at the bottom (>= 0).
        pad_w: columns added at the right (>= 0).
        mode: ``"reflect"`` (mirrors the content; falls back to ``"replicate"`` where a pad is
            not smaller than the size it mirrors, which reflection cannot fill), ``"replicate"``
            or ``"constant"`` (``value``).
        value: fill value of ``"constant"``.

    Returns:
        The padded tensor (``x`` itself when nothing is added).

    Raises:
        ValueError: on a negative pad or an unknown mode.
    """
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"Padding must be >= 0, got pad_h={pad_h}, pad_w={pad_w}.")
    if mode not in ("reflect", "replicate", "constant"):
        raise ValueError(
            f"Unknown padding mode {mode!r}; expected reflect, replicate or constant."
        )
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == "constant":
        return F.pad(x, (0, pad_w, 0, pad_h), value=value)
    h, w = x.shape[-2:]
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
