"""build_postprocess: names, anatomy and errors."""

from __future__ import annotations

import pytest
import torch

from octseg.postprocess import POSTPROCESS_NAMES, build_postprocess, enforce_layer_order
from tests.metrics.metric_cases import ANATOMY, layered_map


@pytest.mark.parametrize("name", [None, "none", "None"])
def test_none_means_no_postprocessing(name: str | None) -> None:
    assert build_postprocess(name, ANATOMY) is None


def test_topology_uses_the_anatomy() -> None:
    fn = build_postprocess("topology", ANATOMY)
    pred = layered_map()
    pred[30:33, 0:4] = 9  # fluid in ONL: kept
    pred[2:5, 6:9] = 9  # fluid in the vitreous: removed
    pred[50:53, 10:12] = 1  # RNFL in the choroid: relabelled
    out = fn(pred)
    expected = enforce_layer_order(
        pred,
        ANATOMY["ordered_labels"],
        ANATOMY["fluid_labels"],
        retina_labels=ANATOMY["layer_labels"],
    )
    assert torch.equal(out, expected)
    assert (out[30:33, 0:4] == 9).all() and (out[2:5, 6:9] == 0).all()
    assert (out[50:53, 10:12] == 8).all()


def test_unknown_names_list_the_valid_ones() -> None:
    assert POSTPROCESS_NAMES == ("none", "topology")
    with pytest.raises(ValueError, match="postprocess='crf'.*null, none, topology"):
        build_postprocess("crf", ANATOMY)


@pytest.mark.parametrize("anatomy", [{}, {"ordered_labels": [0]}, {"ordered_labels": []}])
def test_topology_needs_ordered_regions(anatomy: dict) -> None:
    with pytest.raises(ValueError, match="anatomy.ordered_labels"):
        build_postprocess("topology", anatomy)
