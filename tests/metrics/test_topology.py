"""Topology family on hand-built layer maps."""

from __future__ import annotations

import pytest

from tests.metrics.metric_cases import layered_map, make_suite


def test_topology_flags_out_of_order_columns() -> None:
    target = layered_map()[None]
    pred = target.clone()
    pred[0, 50:52, 0:4] = 1  # RNFL island below the choroid boundary in 4 of 32 columns
    pred[0, 30:33, 10:12] = 9  # fluid inside ONL is not a violation
    suite = make_suite(["topology"])
    suite.update(pred, target)
    assert suite.compute()["topology_violation_rate"].item() == pytest.approx(4 / 32)
