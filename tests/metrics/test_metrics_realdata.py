"""Real Duke DME masks (skipped when ../shared/datasets/duke_dme is absent): distances equal
MONAI's, surfaces are clean on the reference, a known shift gives the known boundary error."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from octseg.metrics.distances import compute_surface_distances
from tests.metrics.metric_cases import make_suite

DUKE = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "duke_dme"
ANATOMY = {
    "ordered_labels": list(range(9)),
    "layer_labels": list(range(1, 8)),
    "fluid_labels": [9],
}
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (DUKE / "masks").is_dir(), reason=f"no Duke DME export at {DUKE}"),
]


def _masks(n: int = 2) -> list[np.ndarray]:
    from PIL import Image

    files = sorted((DUKE / "masks").glob("*.png"))[::50][:n]
    return [np.array(Image.open(f)).astype(np.int64) for f in files]


def test_reference_is_topologically_clean_and_shift_gives_axial_error() -> None:
    for mask in _masks():
        target = torch.from_numpy(mask)[None]
        shifted = torch.roll(target, 2, dims=1)
        shifted[:, :2] = 0
        suite = make_suite(["boundary", "topology"], anatomy=ANATOMY)
        suite.update(target, target)
        out = suite.compute()
        assert out["mad_um"].item() == 0.0 and out["topology_violation_rate"].item() == 0.0
        suite.reset()
        suite.update(shifted, target)
        assert suite.compute()["mad_um"].item() == pytest.approx(2 * 3.87, abs=0.05)


def test_distances_equal_monai_on_real_masks() -> None:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    rng = np.random.default_rng(0)
    for target in _masks(1):
        pred = target.copy()
        for j in range(0, target.shape[1], 64):
            pred[:, j : j + 64] = np.roll(target[:, j : j + 64], int(rng.integers(-2, 3)), 0)
        ours = compute_surface_distances(pred, target, list(range(1, 10)), (3.87, 11.3))
        p = torch.nn.functional.one_hot(torch.from_numpy(pred), 10).permute(2, 0, 1)[None]
        t = torch.nn.functional.one_hot(torch.from_numpy(target), 10).permute(2, 0, 1)[None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = (
                torch.stack(
                    [
                        compute_hausdorff_distance(p, t, spacing=(3.87, 11.3))[0],
                        compute_hausdorff_distance(p, t, percentile=95, spacing=(3.87, 11.3))[0],
                        compute_average_surface_distance(
                            p, t, symmetric=True, spacing=(3.87, 11.3)
                        )[0],
                    ],
                    dim=1,
                )
                .double()
                .numpy()
            )
        finite = np.isfinite(ref[:, :1]).repeat(3, 1)
        np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-5, atol=1e-3)
