"""Fold ensembles and flip test-time augmentation (EnsemblePredictor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from octseg.data.base import InMemorySegDataset, PadCollate
from octseg.evaluation.ensemble import EnsemblePredictor, as_path_list, flip_batch
from octseg.evaluation.predictions import predict_items
from octseg.modules.seg_module import SegModule


def _module(seed: int, symmetric: bool = False) -> SegModule:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1))
    if symmetric:  # left-right mirrored kernels: the net commutes with a horizontal flip
        with torch.no_grad():
            for conv in (net[0], net[2]):
                conv.weight.copy_(conv.weight + conv.weight.flip(-1))
    return SegModule(net=net, objective=nn.Identity(), optimizer=None).eval()


def _batch(images: list[np.ndarray]):
    dataset = InMemorySegDataset(images, None, [f"s{i}" for i in range(len(images))],
                                 ["v"] * len(images))  # fmt: skip
    return PadCollate()([dataset[i] for i in range(len(images))])


def _probs(model, batch) -> list[torch.Tensor]:
    return [item["probs"] for item in predict_items(model, [batch])]


def test_ensemble_is_the_mean_of_its_members_probabilities() -> None:
    rng = np.random.default_rng(0)
    # Two sizes in one batch: each scan is predicted at its own size.
    batch = _batch([rng.random((24, 31), dtype=np.float32), rng.random((20, 17), np.float32)])
    a, b = _module(1), _module(2)
    ensemble = EnsemblePredictor([a, b])
    items = list(predict_items(ensemble, [batch]))
    for item, pa, pb in zip(items, _probs(a, batch), _probs(b, batch), strict=True):
        torch.testing.assert_close(item["probs"], (pa + pb) / 2)
        assert torch.equal(item["pred"], item["probs"].argmax(0))
    assert items[1]["pred"].shape == (20, 17)
    assert not torch.allclose(_probs(a, batch)[0], _probs(b, batch)[0])


def test_flip_tta_of_a_flip_symmetric_input_equals_the_plain_prediction() -> None:
    rng = np.random.default_rng(1)
    half = rng.random((24, 16), dtype=np.float32)
    symmetric = np.concatenate([half, half[:, ::-1]], axis=1)
    model = _module(3, symmetric=True)
    batch = _batch([symmetric])
    plain = _probs(model, batch)[0]
    tta = _probs(EnsemblePredictor([model], tta="flip"), batch)[0]
    torch.testing.assert_close(tta, plain)
    torch.testing.assert_close(plain, plain.flip(-1))


def test_flip_tta_mirrors_back_within_each_scans_true_size() -> None:
    """A flip-equivariant net gives the same prediction with and without TTA on any input,
    in a padded batch of two sizes, only if every view is mirrored back at its own width."""
    rng = np.random.default_rng(2)
    batch = _batch([rng.random((24, 33), dtype=np.float32), rng.random((18, 21), np.float32)])
    model = _module(4, symmetric=True)
    tta = EnsemblePredictor([model], tta="flip")
    for p_tta, p_plain in zip(_probs(tta, batch), _probs(model, batch), strict=True):
        torch.testing.assert_close(p_tta, p_plain)
    flipped = flip_batch(batch)
    torch.testing.assert_close(flipped["image"][1, :, :18, :21], batch["image"][1, :, :18, :21]
                               .flip(-1))  # fmt: skip
    torch.testing.assert_close(flipped["image"][1, :, 18:], batch["image"][1, :, 18:])


def test_an_asymmetric_net_with_tta_averages_both_views() -> None:
    rng = np.random.default_rng(3)
    batch = _batch([rng.random((16, 20), dtype=np.float32)])
    model = _module(5)
    plain = _probs(model, batch)[0]
    mirrored = _probs(model, flip_batch(batch))[0].flip(-1)
    tta = _probs(EnsemblePredictor([model], tta="flip"), batch)[0]
    torch.testing.assert_close(tta, (plain + mirrored) / 2)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="tta='rotate'"):
        EnsemblePredictor([_module(0)], tta="rotate")
    with pytest.raises(ValueError, match="ckpt_path is empty"):
        as_path_list([])
    assert [p.name for p in as_path_list(["a.ckpt", "b.ckpt"])] == ["a.ckpt", "b.ckpt"]
