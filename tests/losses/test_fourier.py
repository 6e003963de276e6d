"""FourierNet's FD targets (onion peeling, harmonic amplitudes, safe normalisation), their cache
and the FD regression term, on hand-built shapes."""

from __future__ import annotations

import copy
import pickle
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import torch

from octseg.losses.fourier import (
    FDTargetCache,
    FourierDescriptorLoss,
    contour_harmonic_amplitudes,
    fd_targets,
    fourier_descriptor_maps,
    normalise_fd_maps,
)
from octseg.models.base import SegOutput
from tests.conftest import DUKE_EXPORT, requires_duke

IGN = 255


def _disc(size: int = 64, radius: float = 20.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return ((yy - c) ** 2 + (xx - c) ** 2 <= radius**2).astype(np.int64)


def _ellipse(a: float = 24.0, b: float = 12.0, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return (((yy - c) / b) ** 2 + ((xx - c) / a) ** 2 <= 1).astype(np.int64)


def _rectangle() -> np.ndarray:
    m = np.zeros((40, 70), np.int64)
    m[10:30, 5:55] = 1
    return m


def _irregular() -> np.ndarray:
    """An F-shaped region (no symmetry) next to a small blob of class 2."""
    m = np.zeros((80, 90), np.int64)
    m[10:60, 10:30] = 1
    m[40:60, 10:70] = 1
    m[20:30, 30:50] = 1
    m[65:75, 70:85] = 2
    return m


def _outer_ring(mask: np.ndarray) -> np.ndarray:
    """Pixels of the first peel: region pixels with a 4-neighbour outside the region."""
    padded = np.pad(mask.astype(bool), 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
    inner &= padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask.astype(bool) & ~inner


# ----------------------------------------------------------------------- harmonic amplitudes
def test_disc_has_no_harmonic_energy() -> None:
    """A circle's centre distance is constant: every harmonic is ~0 (only the pixel staircase,
    with 4-fold symmetry, leaves a trace at k = 4, 8)."""
    disc = _disc(radius=20.0)
    maps = fourier_descriptor_maps(disc, [1], num_harmonics=8)
    ring = _outer_ring(disc)
    assert np.isfinite(maps).all()
    assert np.abs(maps[:, ring]).max() < 0.01 * 20.0
    # Central symmetry: the odd harmonics vanish exactly, everywhere in the disc.
    assert np.abs(maps[0::2]).max() < 1e-9
    # ... and normalise to exact zeros, not to amplified rounding noise.
    targets = fd_targets(disc, [1], num_harmonics=8)
    assert (targets[0::2] == 0).all() and targets[3].std() == pytest.approx(1.0, abs=0.01)


def test_ellipse_energy_is_in_the_second_harmonic() -> None:
    ellipse = _ellipse(a=24.0, b=12.0)
    maps = fourier_descriptor_maps(ellipse, [1], num_harmonics=4)
    ring = _outer_ring(ellipse)
    a1, a2, a3, a4 = (float(np.median(m[ring])) for m in maps)
    assert a2 == pytest.approx((24.0 - 12.0) / 2, rel=0.1)  # r(l) ~ mean + (a - b)/2 cos 2t
    assert a1 < 1e-9 and a3 < 1e-9
    assert a4 < 0.1 * a2


def test_rectangle_odd_harmonics_vanish_and_normalise_to_finite_zeros() -> None:
    """The seed's NaN case: a centrally symmetric shape has an all-zero first-harmonic map."""
    rect = _rectangle()
    raw = fourier_descriptor_maps(rect, [1], num_harmonics=2)
    assert np.abs(raw[0]).max() < 1e-9
    assert raw[1][rect == 1].max() > 1.0  # elongated: a strong second harmonic
    targets = fd_targets(rect, [1], num_harmonics=2)
    assert np.isfinite(targets).all()
    assert (targets[0] == 0).all()
    assert targets[1].std() == pytest.approx(1.0, abs=0.01)


def test_single_contour_matches_the_formula() -> None:
    """The amplitudes of a traced square ring against a direct evaluation of the series."""
    square = np.zeros((12, 20), np.uint8)
    square[2:8, 3:15] = 1
    contours, _ = cv2.findContours(square, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    pts = contours[0].reshape(-1, 2).astype(float)
    nxt = np.roll(pts, -1, axis=0)
    r = np.hypot(*(pts - pts.mean(0)).T)
    delta = r - np.roll(r, -1)
    step = np.hypot(*(pts - nxt).T)
    pos = np.cumsum(step) - step / 2
    perimeter = step.sum()
    expected = []
    for k in (1, 2, 3):
        a = (delta * np.sin(2 * np.pi * k * pos / perimeter)).sum() / (k * np.pi)
        b = -(delta * np.cos(2 * np.pi * k * pos / perimeter)).sum() / (k * np.pi)
        expected.append(np.hypot(a, b))
    got = contour_harmonic_amplitudes(contours, 3)[0]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert contour_harmonic_amplitudes([np.array([[4, 5]])], 2).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize(
    "transform",
    [np.fliplr, np.flipud, np.rot90, lambda m: np.rot90(m, 2), np.transpose],
    ids=["fliplr", "flipud", "rot90", "rot180", "transpose"],
)
def test_amplitudes_are_invariant_to_flips_and_rotations(transform) -> None:
    mask = _irregular()
    maps = fourier_descriptor_maps(mask, [1, 2], num_harmonics=3)
    moved = fourier_descriptor_maps(np.ascontiguousarray(transform(mask)), [1, 2], 3)
    expected = np.stack([transform(m) for m in maps])
    np.testing.assert_allclose(moved, expected, atol=1e-9)
    assert maps[0][_outer_ring(mask == 1)].min() > 0.5  # no symmetry: real first harmonic


def test_onion_peeling_paints_every_region_pixel_once_per_ring() -> None:
    """Rings of a 20 x 50 rectangle: 10 peels, each a rectangle ring with one value; outside the
    class everything is 0; a region touching the border equals the same region moved inward."""
    rect = _rectangle()
    maps = fourier_descriptor_maps(rect, [1], num_harmonics=2)[1]
    assert (maps[rect == 0] == 0).all()
    remaining = rect.astype(bool)
    values = []
    while remaining.any():
        ring = _outer_ring(remaining)
        ring_values = np.unique(np.round(maps[ring], 9))
        assert len(ring_values) == 1
        values.append(float(ring_values[0]))
        remaining &= ~ring
    assert len(values) == 10
    # Inner rings are more elongated relative to their size: the amplitude stays positive.
    assert min(values) > 0
    shifted = np.zeros_like(rect)
    shifted[0:20, 0:50] = 1
    np.testing.assert_allclose(
        fourier_descriptor_maps(shifted, [1], 2)[:, 0:20, 0:50],
        fourier_descriptor_maps(rect, [1], 2)[:, 10:30, 5:55],
        atol=1e-12,
    )


def test_empty_and_unannotated_masks_give_finite_zeros() -> None:
    empty = np.zeros((30, 40), np.int64)
    targets = fd_targets(empty, [1, 2], num_harmonics=2)
    assert targets.shape == (4, 30, 40) and targets.dtype == np.float32
    assert np.isfinite(targets).all() and (targets == 0).all()
    ignored = np.full((30, 40), IGN)
    assert (fd_targets(ignored, [1], 1, ignore_index=IGN) == 0).all()
    assert normalise_fd_maps(np.zeros((1, 3, 3))).sum() == 0


def test_targets_do_not_depend_on_batch_padding() -> None:
    mask = _irregular()
    padded = np.full((96, 100), IGN)
    padded[:80, :90] = mask
    a = fd_targets(mask, [1, 2], 2, ignore_index=IGN)
    b = fd_targets(padded, [1, 2], 2, ignore_index=IGN)
    np.testing.assert_allclose(b[:, :80, :90], a, atol=1e-6)
    assert (b[:, 80:] == 0).all() and (b[:, :, 90:] == 0).all()


def test_fd_maps_reject_non_2d_masks() -> None:
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        fourier_descriptor_maps(np.zeros((2, 3, 4), np.int64), [1])


# ----------------------------------------------------------------------- cache
def test_cache_returns_the_same_tensor_for_the_same_mask() -> None:
    cache = FDTargetCache(max_entries=4)
    mask = _irregular()
    first = cache.get(mask, [1, 2], 1, IGN)
    assert cache.get(mask.copy(), [1, 2], 1, IGN) is first  # keyed by content, not identity
    assert (cache.hits, cache.misses) == (1, 1)
    torch.testing.assert_close(first, torch.from_numpy(fd_targets(mask, [1, 2], 1, IGN)))
    other = mask.copy()
    other[0, 0] = 2
    assert cache.get(other, [1, 2], 1, IGN) is not first
    assert cache.get(mask, [1], 1, IGN) is not first  # the settings are part of the key
    assert cache.get(mask, [1, 2], 2, IGN).shape[0] == 4


def test_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = FDTargetCache(max_entries=2)
    masks = [np.roll(_rectangle(), s, axis=1) for s in range(4)]
    first = cache.get(masks[0], [1], 1, IGN)
    for m in masks[1:]:
        cache.get(m, [1], 1, IGN)
    assert len(cache) == 2
    assert cache.get(masks[0], [1], 1, IGN) is not first  # evicted, recomputed
    one = first.numel() * first.element_size()
    small = FDTargetCache(max_entries=100, max_bytes=int(2.5 * one))
    for m in masks:
        small.get(m, [1], 1, IGN)
    assert len(small) == 2 and small.nbytes <= small.max_bytes
    with pytest.raises(ValueError, match="cache"):
        FDTargetCache(max_entries=0)


def test_cache_pickles_and_copies_empty_and_is_thread_safe() -> None:
    cache = FDTargetCache(max_entries=3, max_bytes=10**8)
    mask = _irregular()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: cache.get(mask, [1, 2], 1, IGN), range(8)))
    assert len(cache) == 1
    assert all(torch.equal(r, results[0]) for r in results)
    for clone in (pickle.loads(pickle.dumps(cache)), copy.deepcopy(cache)):
        assert len(clone) == 0 and (clone.max_entries, clone.max_bytes) == (3, 10**8)
        assert torch.equal(clone.get(mask, [1, 2], 1, IGN), results[0])


# ----------------------------------------------------------------------- loss term
def _batch() -> tuple[torch.Tensor, list[int]]:
    mask = torch.from_numpy(_irregular())
    other = torch.from_numpy(np.ascontiguousarray(_irregular()[::-1]))
    other[:, -5:] = IGN  # unannotated columns
    return torch.stack([mask, other]), [1, 2]


def test_loss_is_zero_at_the_targets_and_ignores_unannotated_pixels() -> None:
    mask, classes = _batch()
    term = FourierDescriptorLoss(classes=None, num_harmonics=2, ignore_index=IGN)
    logits = torch.zeros(2, 3, *mask.shape[-2:])
    target = term.targets(mask, classes)
    assert target.shape == (2, 4, *mask.shape[-2:])
    zero = term(SegOutput(logits, aux={"fd_maps": target.clone()}), {"mask": mask})
    assert float(zero) == 0.0
    noisy = target + torch.randn_like(target)
    loss = term(SegOutput(logits, aux={"fd_maps": noisy}), {"mask": mask})
    noisy_ignored = noisy.clone()
    noisy_ignored[1, :, :, -5:] += 100.0
    same = term(SegOutput(logits, aux={"fd_maps": noisy_ignored}), {"mask": mask})
    torch.testing.assert_close(loss, same)
    mean = FourierDescriptorLoss(None, 2, IGN, reduction="mean")
    torch.testing.assert_close(mean(SegOutput(logits, aux={"fd_maps": noisy}), {"mask": mask}),
                               loss / 4)
    assert term.cache.hits >= 2  # the batch's masks were computed once


def test_loss_gradient_is_the_mse_gradient() -> None:
    mask, classes = _batch()
    term = FourierDescriptorLoss(classes=classes, num_harmonics=1, ignore_index=IGN)
    target = term.targets(mask, classes)
    pred = torch.zeros_like(target, requires_grad=True)
    term(SegOutput(torch.zeros(2, 3, *mask.shape[-2:]), aux={"fd_maps": pred}), {"mask": mask})\
        .backward()
    valid = (mask != IGN).unsqueeze(1).float()
    torch.testing.assert_close(pred.grad, -2 * target * valid / valid.sum())


def test_loss_errors_name_the_settings() -> None:
    mask, _ = _batch()
    logits = torch.zeros(2, 3, *mask.shape[-2:])
    term = FourierDescriptorLoss(num_harmonics=2, ignore_index=IGN)
    with pytest.raises(ValueError, match="num_harmonics"):
        term(SegOutput(logits, aux={"fd_maps": torch.zeros(2, 3, *mask.shape[-2:])}),
             {"mask": mask})
    with pytest.raises(ValueError, match="aux\\['fd_maps'\\]"):
        term(SegOutput(logits), {"mask": mask})
    with pytest.raises(ValueError, match="reduction"):
        FourierDescriptorLoss(reduction="max")


def test_loss_config_follows_the_model_config(make_cfg) -> None:
    cfg = make_cfg("model=fouriernet", "loss=fouriernet", "model.net.num_harmonics=2",
                   "model.net.fd_classes=[1,3]")
    assert cfg.loss.terms.fd.num_harmonics == 2
    assert list(cfg.loss.terms.fd.classes) == [1, 3]
    plain = make_cfg("model=unet", "loss=fouriernet", subdir="plain")
    assert plain.loss.terms.fd.classes is None and plain.loss.terms.fd.num_harmonics == 1


@requires_duke()
def test_real_duke_mask_gives_finite_standardised_targets() -> None:
    """Every class of a real B-scan (layers, choroid, fluid): finite targets, each map either
    standardised (std ~1 over annotated pixels) or all zeros (class absent)."""
    from PIL import Image

    files = sorted((DUKE_EXPORT / "masks").glob("*.png"))
    mask = np.array(Image.open(files[0])).astype(np.int64)
    classes = list(range(1, 10))
    raw = fourier_descriptor_maps(mask, classes, num_harmonics=2)
    targets = fd_targets(mask, classes, num_harmonics=2, ignore_index=IGN)
    assert targets.shape == (18, *mask.shape) and np.isfinite(targets).all()
    valid = mask != IGN
    for i, c in enumerate(np.repeat(classes, 2)):
        assert (raw[i][mask != c] == 0).all()
        std = float(targets[i][valid].std())
        assert std == pytest.approx(1.0, abs=0.01) or (c not in mask and std == 0.0)
