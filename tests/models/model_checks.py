"""Checks shared by the model tests: odd B-scan sizes, toy batches, a few training steps and
gradient coverage. Each test seeds the global RNG itself, before building its network."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from octseg.models.base import SegOutput, as_seg_output
from octseg.models.wrappers import PadToDivisor

# A Duke-sized B-scan (496 x 523) and a small one, both odd, with batch sizes 1 and 3.
ODD_BSCAN_SIZES = [(1, 496, 523), (3, 97, 131)]

LossFn = Callable[[Any, Mapping[str, torch.Tensor]], "torch.Tensor | Mapping[str, torch.Tensor]"]


def check_odd_size(
    net: nn.Module, batch: int, h: int, w: int, num_classes: int, in_channels: int = 1
) -> SegOutput:
    """Runs ``net`` (wrapped in :class:`PadToDivisor` unless it is) in eval mode on a random
    ``[batch, in_channels, h, w]`` input and asserts finite logits ``[batch, K, h, w]``.

    Returns:
        The output, for method-specific checks of its ``aux`` entries.
    """
    wrapped = net if isinstance(net, PadToDivisor) else PadToDivisor(net)
    wrapped.eval()
    with torch.no_grad():
        out = as_seg_output(wrapped(torch.randn(batch, in_channels, h, w)))
    assert out.logits.shape == (batch, num_classes, h, w)
    assert torch.isfinite(out.logits).all()
    return out


def banded_batch(
    num_classes: int,
    h: int,
    w: int,
    shifts: Sequence[int] = (0, 0),
    noise: float = 0.05,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Toy B-scans: horizontal bands of ``num_classes`` labels, one image per entry of
    ``shifts`` (the label of row ``r`` is ``(r K // h + shift) mod K``), intensity
    ``label / (K - 1)`` plus Gaussian noise of std ``noise``.

    Returns:
        A batch: ``image [N, 1, h, w]`` float32 and ``mask [N, h, w]`` int64.
    """
    rows = torch.arange(h)
    labels = torch.stack([(rows * num_classes // h + s) % num_classes for s in shifts])
    mask = labels[:, :, None].expand(len(shifts), h, w).contiguous()
    grain = torch.randn(len(shifts), h, w, generator=generator)
    image = (mask.float() / (num_classes - 1) + noise * grain)[:, None]
    return {"image": image, "mask": mask}


def fit_steps(
    net: nn.Module,
    loss_fn: LossFn,
    batch: Mapping[str, torch.Tensor],
    steps: int,
    lr: float,
) -> list[dict[str, float]]:
    """``steps`` Adam steps of ``net`` (in train mode) on one batch.

    Args:
        net: the network; called on ``batch["image"]``.
        loss_fn: ``(net output, batch) ->`` a loss tensor, or a mapping with a ``"loss"`` entry
            (an :class:`~octseg.losses.objective.Objective`'s terms).
        batch: ``image`` and ``mask`` (and whatever ``loss_fn`` reads).
        steps: optimiser steps.
        lr: Adam learning rate.

    Returns:
        Per step, every term as a float (``{"loss": ...}`` for a plain tensor).
    """
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        result = loss_fn(net(batch["image"]), batch)
        terms = {"loss": result} if isinstance(result, torch.Tensor) else dict(result)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    return history


def cross_entropy(output: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Plain cross-entropy of the output's logits against ``batch["mask"]`` (a ``loss_fn``)."""
    return F.cross_entropy(as_seg_output(output).logits, batch["mask"])


def params_without_grad(net: nn.Module) -> list[str]:
    """Names of trainable parameters that received no gradient from the last backward pass."""
    return [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
