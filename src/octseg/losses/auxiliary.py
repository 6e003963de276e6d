"""Loss terms on auxiliary network outputs (``SegOutput.aux``): extra heads, cascade stages.

A network with an auxiliary head returns its logits under a name in ``aux`` (e.g. MGU-Net's
``"stage1_logits"``, Masood's ``"cnn_logits"``); :class:`AuxiliaryLoss` scores them with any term
that has ``compute(logits, target)``. Heads that predict coarser classes than the dataset's
(MGU-Net's stage 1: background / retina / disc) also return a lookup ``label -> head class``
(a 1-D long tensor in ``aux``), so the grouping lives in one place: the network's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from octseg.losses.terms import check_labels, check_term
from octseg.models.base import SegOutput

__all__ = ["AuxiliaryLoss", "remap_labels"]


def remap_labels(target: torch.Tensor, lookup: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Maps every label ``k`` of ``target [B,H,W]`` to ``lookup[k]``; ``ignore_index`` stays.

    Raises:
        ValueError: if ``target`` holds a label outside ``0..len(lookup)-1`` (other than
            ``ignore_index``).
    """
    check_labels(target, lookup.numel(), ignore_index)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    mapped = lookup.to(target.device)[safe]
    return torch.where(valid, mapped, torch.full_like(target, ignore_index))


class AuxiliaryLoss(nn.Module):
    """Applies a loss term to ``output.aux[key]`` instead of ``output.logits``.

    Args:
        term: a module with ``compute(logits, target)`` (e.g.
            :class:`~octseg.losses.terms.DiceCELoss`).
        key: the ``aux`` entry holding the logits ``[B, K', H, W]``.
        target_map_key: optional ``aux`` entry holding a lookup ``[K]`` from the dataset's
            labels to the head's classes; the mask is remapped through it.
        ignore_index: label left untouched by the remapping.

    Raises:
        KeyError: (in ``forward``) if the network did not return ``key`` or
            ``target_map_key`` in ``aux``.
    """

    def __init__(
        self,
        term: nn.Module,
        key: str,
        target_map_key: str | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        check_term(term, "AuxiliaryLoss")
        self.term = term
        self.key = key
        self.target_map_key = target_map_key
        self.ignore_index = ignore_index

    def _aux(self, output: SegOutput, key: str) -> Any:
        if key not in output.aux:
            raise KeyError(
                f"AuxiliaryLoss reads output.aux[{key!r}], but the network returned only "
                f"{sorted(output.aux)}; this loss term belongs to a network with that output "
                "(check the model/loss pairing in the config)."
            )
        return output.aux[key]

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        logits = self._aux(output, self.key)
        target = batch["mask"]
        if self.target_map_key is not None:
            lookup = self._aux(output, self.target_map_key)
            target = remap_labels(target, lookup, self.ignore_index)
        return self.term.compute(logits, target)
