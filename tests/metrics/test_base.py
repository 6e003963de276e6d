"""The family registry: every built-in family is registered in the module of its computation,
and a newly registered family is picked up by MetricSuite."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from octseg.metrics import _base
from octseg.metrics._base import BatchContext, MetricFamily, family_registry, register_family
from octseg.metrics.suite import FAMILIES, MetricSuite

BUILT_IN = {
    "overlap": "octseg.metrics.overlap",
    "detection": "octseg.metrics.detection",
    "boundary": "octseg.metrics.surfaces",
    "thickness": "octseg.metrics.thickness",
    "topology": "octseg.metrics.topology",
    "distance": "octseg.metrics.distances",
    "probabilistic": "octseg.metrics.probabilistic",
    "fluid": "octseg.metrics.fluid",
    "cvi": "octseg.metrics.cvi",
}


def test_registry_lists_every_built_in_family() -> None:
    registry = family_registry()
    assert set(registry) == set(BUILT_IN)
    assert FAMILIES == tuple(sorted(BUILT_IN))
    for name, cls in registry.items():
        assert issubclass(cls, MetricFamily) and cls.name == name
        assert cls.__module__ == BUILT_IN[name], name


class _AnnotatedPixels(MetricFamily):
    """A test family: annotated pixels per scan, summed."""

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"pixels": (1,)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        count = (ctx.target != ctx.spec.ignore_index).sum(dim=(1, 2))
        return {"pixels": count.double().view(-1, 1)}

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        return {"annotated_pixels": states["pixels"].sum()}


def test_a_registered_family_is_picked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_base, "_REGISTRY", dict(_base._REGISTRY))  # restored after the test
    with pytest.raises(ValueError, match="Unknown metric families"):
        MetricSuite(families=["annotated_pixels"], num_classes=3)
    family = register_family("annotated_pixels")(_AnnotatedPixels)
    assert family.name == "annotated_pixels"
    assert family_registry()["annotated_pixels"] is _AnnotatedPixels
    suite = MetricSuite(families=["overlap", "annotated_pixels"], num_classes=3)
    target = torch.zeros(2, 4, 5, dtype=torch.long)
    target[1, 0, :] = 255
    suite.update(target.clone().clamp(max=2), target)
    out = suite.compute()
    assert out["annotated_pixels"].item() == 40 - 5
    assert "dice" in out


def test_register_family_rejects_clashes_and_non_families(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_base, "_REGISTRY", dict(_base._REGISTRY))
    with pytest.raises(ValueError, match="already registered"):
        register_family("overlap")(_AnnotatedPixels)
    with pytest.raises(TypeError, match="MetricFamily subclass"):
        register_family("not_a_family")(dict)
    with pytest.raises(ValueError, match="non-empty"):
        register_family("")
