"""ISLAM's network and decoding: surfaces back from signed distances, layer order always
valid, odd sizes, gradients, overfitting, parameter counts."""

from __future__ import annotations

import pytest
import torch

from octseg.losses.islam import ClampedGaussianNLL, sdf_targets, signed_distance_maps
from octseg.metrics.surfaces import extract_surfaces
from octseg.models.islam import (
    ISLAMNet,
    decode_surfaces,
    order_surfaces,
    rasterise_surfaces,
    region_log_probs,
)
from octseg.models.wrappers import PadToDivisor
from tests.models.model_checks import (
    banded_batch,
    check_odd_size,
    fit_steps,
    params_without_grad,
)

ORDERED = list(range(9))  # Duke / synthetic: 9 regions, 8 surfaces, fluid label 9
TINY = {
    "encoder_channels": [8, 16, 32, 64],
    "bottleneck_channels": 64,
    "decoder_channels": [32, 16],
    "head_channels": [8],
    "head_aspp_channels": 4,
}


def _tiny(**kwargs: object) -> ISLAMNet:
    return ISLAMNet(1, 10, ORDERED, **{**TINY, **kwargs})


@pytest.mark.parametrize("slope", [0.0, 0.6, -1.3])
def test_decoding_recovers_straight_and_tilted_surfaces(slope: float) -> None:
    width, height = 50, 90
    cols = torch.arange(width, dtype=torch.float32)
    z = torch.stack([40 + slope * (cols - 25) + 0.37, 62 + 0.5 * slope * (cols - 25)])[None]
    sdf = signed_distance_maps(z, height, max_distance=30)
    surfaces, sigma = decode_surfaces(sdf, torch.full_like(sdf, 2 * torch.log(torch.tensor(3.0))))
    assert (surfaces - z).abs().max() < 0.5
    torch.testing.assert_close(sigma, torch.full_like(sigma, 3.0))


def test_decoding_recovers_label_map_surfaces_within_half_a_pixel() -> None:
    # A curved, layered label map: targets from it decode back to its surfaces.
    height, width = 64, 70
    cols = torch.arange(width, dtype=torch.float32)
    tops = [10 + 4 * torch.sin(cols / 9), 25 + 6 * torch.cos(cols / 13), 40 + 0.2 * cols]
    rows = torch.arange(height, dtype=torch.float32).view(height, 1) + 0.5
    labels = sum((rows > t.round()).long() for t in tops)[None]
    true, _ = extract_surfaces(labels, [0, 1, 2, 3])
    sdf, _ = sdf_targets(labels, [0, 1, 2, 3])
    surfaces, _ = decode_surfaces(sdf)
    assert (surfaces - true.float()).abs().max() < 0.5
    decoded = rasterise_surfaces(order_surfaces(surfaces), height, [0, 1, 2, 3])
    assert torch.equal(decoded, labels)


def test_decoding_prefers_the_crossing_nearest_the_negative_count() -> None:
    # A column that is negative above row 20, with a stray positive island at rows 3..4.
    mu = torch.arange(40, dtype=torch.float32) + 0.5 - 20
    mu[3:5] = 2.0
    surfaces, _ = decode_surfaces(mu.view(1, 1, 40, 1))
    assert surfaces.item() == pytest.approx(20.0)
    everywhere_negative, _ = decode_surfaces(-torch.ones(1, 1, 40, 1))
    assert everywhere_negative.item() == 40
    heights = torch.tensor([30])
    cut, _ = decode_surfaces(-torch.ones(1, 1, 40, 1), heights=heights)
    assert cut.item() == pytest.approx(29.5)  # the crossing into the rows below the scan


def _assert_valid_order(labels: torch.Tensor, ordered: list[int]) -> None:
    rank = torch.as_tensor(ordered).argsort()[labels]  # ordered labels 0..S map to themselves
    assert (rank[:, 1:] >= rank[:, :-1]).all(), "a region lies above the one before it"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layer_order_is_always_valid_after_decoding(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    height, width = 48, 33
    # Random SDFs (noise, several crossings) and crossed surfaces (surface 2 above surface 0).
    noise = 8 * torch.randn(2, 5, height, width, generator=g)
    rows = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
    crossed = rows - torch.tensor([30.0, 10.0, 5.0, 40.0, 20.0]).view(1, 5, 1, 1)
    for mean in (noise, crossed.expand(2, 5, height, width), noise + crossed):
        surfaces, sigma = decode_surfaces(mean, torch.zeros_like(mean), torch.tensor([48, 40]))
        ordered = order_surfaces(surfaces, torch.tensor([48, 40]))
        assert (ordered[:, 1:] >= ordered[:, :-1]).all()
        assert ordered.min() >= 0 and ordered[1].max() <= 40 and torch.isfinite(sigma).all()
        labels = rasterise_surfaces(ordered, height, ORDERED[:6])
        _assert_valid_order(labels, ORDERED[:6])
        z, _ = extract_surfaces(labels, ORDERED[:6])
        assert (z[:, 1:] >= z[:, :-1]).all()


def test_region_probabilities_sum_to_one_and_follow_the_surfaces() -> None:
    rows = torch.arange(30, dtype=torch.float32).view(1, 1, 30, 1) + 0.5
    mean = torch.cat([rows - 10, rows - 20], dim=1).expand(1, 2, 30, 4)
    log_probs = region_log_probs(mean, torch.full_like(mean, -4.0), [0, 2, 1], num_classes=4)
    probs = log_probs.exp()
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 30, 4), atol=1e-5, rtol=0)
    labels = probs.argmax(1)[0, :, 0]
    assert labels[:10].eq(0).all() and labels[10:20].eq(2).all() and labels[20:].eq(1).all()
    assert probs[:, 3].max() <= 2e-6  # fluid: not a region of the surfaces


@pytest.mark.parametrize(("batch", "h", "w"), [(3, 97, 131)])
def test_odd_size(batch: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    out = check_odd_size(ISLAMNet(1, 10, ORDERED), batch, h, w, num_classes=10)
    assert out.aux["sdf_mean"].shape == out.aux["sdf_logvar"].shape == (batch, 8, h, w)


@pytest.mark.slow
def test_duke_size() -> None:
    torch.manual_seed(0)
    check_odd_size(ISLAMNet(1, 10, ORDERED), 1, 496, 523, num_classes=10)


def test_big_preset_needs_64_and_works_at_odd_sizes() -> None:
    torch.manual_seed(0)
    net = ISLAMNet(
        1, 4, [0, 1, 2, 3], encoder_channels=[4, 8, 8, 16, 16, 16, 32], bottleneck_channels=32,
        decoder_channels=[32, 16, 16, 8], head_channels=[8, 8], head_aspp_channels=4,
        head_hidden_channels=[4],
    )  # fmt: skip
    assert net.size_divisor == 64
    out = check_odd_size(net, 2, 70, 90, num_classes=4)
    assert out.aux["sdf_mean"].shape == (2, 3, 70, 90)


def test_official_small_parameter_count() -> None:
    # methods.md 3.3: 65.84 M for the official small multi-head Gaussian network (3 surfaces).
    net = ISLAMNet(1, 4, [0, 1, 2, 3])
    assert sum(p.numel() for p in net.parameters()) == 65_843_702
    duke = ISLAMNet(1, 10, ORDERED)
    assert sum(p.numel() for p in duke.parameters()) == 67_126_432


def test_logvar_relu_option_bounds_sigma_below_by_one_pixel() -> None:
    torch.manual_seed(0)
    net = PadToDivisor(_tiny(logvar_relu=True))
    for head in net.net.logvar_heads:  # away from the zero start, so the ReLU matters
        torch.nn.init.normal_(head.output[-1].weight, std=1.0)
        torch.nn.init.constant_(head.output[-1].bias, -3.0)
    out = net(torch.randn(2, 1, 40, 50))
    assert out.aux["sdf_logvar"].min() >= 0
    plain = PadToDivisor(_tiny())
    assert plain(torch.randn(2, 1, 40, 50)).aux["sdf_logvar"].abs().max() == 0  # zero start


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="decoder blocks"):
        ISLAMNet(1, 10, ORDERED, encoder_channels=[8, 16, 32], decoder_channels=[16, 8])
    with pytest.raises(ValueError, match="outside"):
        ISLAMNet(1, 3, [0, 1, 5])


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = PadToDivisor(_tiny()).train()
    batch = banded_batch(9, 40, 50, shifts=(0, 2))
    loss = ClampedGaussianNLL(ORDERED)(net(batch["image"]), batch)
    loss = loss + net(batch["image"]).logits.square().mean()
    loss.backward()
    assert not params_without_grad(net)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_overfits_one_batch_and_decodes_its_layers() -> None:
    torch.manual_seed(0)
    regions = [0, 1, 2, 3]
    net = PadToDivisor(ISLAMNet(1, 4, regions, **TINY))
    batch = banded_batch(4, 32, 40, shifts=(0, 0), noise=0.05)
    term = ClampedGaussianNLL(regions)
    history = fit_steps(net, lambda out, b: term(out, b), batch, steps=40, lr=3e-3)
    assert history[-1]["loss"] < 0.2 * history[0]["loss"]
    net.eval()
    with torch.no_grad():
        out = net(batch["image"])
    surfaces, _ = decode_surfaces(out.aux["sdf_mean"])
    true, _ = extract_surfaces(batch["mask"], regions)
    assert (surfaces - true.float()).abs().mean() < 2.0
