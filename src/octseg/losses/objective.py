"""The training objective: a weighted sum of named loss terms.

Every term sees the whole network output (logits, auxiliary heads, deep-supervision maps,
model-internal regularisers) and the whole batch (mask with ``ignore_index``, optional weight
maps), so methods with extra heads or losses plug in new terms without touching the module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from octseg.models.base import SegOutput

__all__ = ["Objective"]


class Objective(nn.Module):
    """Weighted sum of loss terms.

    Args:
        terms: name -> ``nn.Module`` with ``forward(output: SegOutput, batch: dict) -> Tensor``.
        weights: name -> weight (default 1.0 for every term). A name that matches a key of
            ``SegOutput.reg`` (a model-internal regulariser) adds that regulariser with the
            given weight.

    Returns (from ``forward``):
        ``{"loss": total, "<name>": unweighted term, ...}``.

    Raises:
        ValueError: if no term is given or a weight names neither a term nor a regulariser.
    """

    def __init__(
        self, terms: Mapping[str, nn.Module], weights: Mapping[str, float] | None = None
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("Objective needs at least one loss term (config key `loss.terms`).")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {name: 1.0 for name in self.terms}
        self.weights.update({k: float(v) for k, v in (weights or {}).items()})

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            values[name] = term(output, batch)
        for name, value in output.reg.items():
            if name in self.weights:
                values[name] = value
        unknown = set(self.weights) - set(values)
        if unknown:
            raise ValueError(
                f"loss.weights names {sorted(unknown)}, which are neither loss terms "
                f"({sorted(self.terms)}) nor regularisers returned by the network "
                f"({sorted(output.reg)})."
            )
        total = sum(self.weights[name] * value for name, value in values.items())
        return {"loss": total, **values}
