"""f-AnoGAN networks: shapes, parameter counts, tiling and stitching of B-scans of any size."""

from __future__ import annotations

import pytest
import torch

from octseg.models.fanogan import (
    FAnoGAN,
    FAnoGANCritic,
    FAnoGANEncoder,
    FAnoGANGenerator,
    extract_patches,
    patch_starts,
    stitch_patches,
)
from tests.models.model_checks import ODD_BSCAN_SIZES


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_official_sizes_and_parameter_counts() -> None:
    """DIM 64, ZDIM 128 (wgangp_64x64.py): counts quoted in conf/model/fanogan.yaml and
    docs/models.md."""
    g, d, e = FAnoGANGenerator(), FAnoGANCritic(), FAnoGANEncoder()
    assert (_count(g), _count(d), _count(e)) == (8_539_329, 7_490_689, 8_531_200)
    with torch.no_grad():
        x = g(torch.randn(3, 128))
        assert x.shape == (3, 1, 64, 64) and float(x.abs().max()) <= 1.0
        assert d(x).shape == (3,) and d.features(x).shape == (3, 8192)
        assert e(x).shape == (3, 128)


def test_patches_must_be_64() -> None:
    with pytest.raises(ValueError, match="64 x 64 patches"):
        FAnoGANCritic(dim=4)(torch.zeros(1, 1, 32, 32))


@pytest.mark.parametrize(
    "size, stride, expected",
    [(64, 32, [0]), (128, 64, [0, 64]), (131, 32, [0, 32, 64, 67]), (97, 64, [0, 33])],
)
def test_patch_starts_cover_the_axis(size: int, stride: int, expected: list[int]) -> None:
    assert patch_starts(size, 64, stride) == expected


def test_extract_then_stitch_gives_back_the_image() -> None:
    """Averaging overlapping copies of the same pixel returns the pixel: any size, any stride."""
    image = torch.randn(1, 97, 131, dtype=torch.float64)
    for stride in (17, 32, 64):
        ys, xs = patch_starts(97, 64, stride), patch_starts(131, 64, stride)
        patches = extract_patches(image, ys, xs)
        assert patches.shape == (len(ys) * len(xs), 1, 64, 64)
        torch.testing.assert_close(stitch_patches(patches[:, 0], ys, xs, (97, 131)), image[0])


def test_constant_residual_stitches_to_the_constant() -> None:
    ys, xs = patch_starts(150, 64, 32), patch_starts(200, 64, 32)
    values = torch.full((len(ys) * len(xs), 64, 64), 0.37)
    out = stitch_patches(values, ys, xs, (150, 200))
    torch.testing.assert_close(out, torch.full((150, 200), 0.37))


def test_overlaps_are_averaged() -> None:
    """Two patches on a 64 x 96 map overlapping in columns 32..63: the mean of both there."""
    values = torch.stack([torch.full((64, 64), 1.0), torch.full((64, 64), 3.0)])
    out = stitch_patches(values, [0], [0, 32], (64, 96))
    assert float(out[0, 0]) == 1.0 and float(out[0, 40]) == 2.0 and float(out[0, 90]) == 3.0


def _tiny(**kwargs: object) -> FAnoGAN:
    torch.manual_seed(0)
    return FAnoGAN(dim=4, latent_dim=8, **kwargs).eval()


@pytest.mark.parametrize("batch, h, w", [*ODD_BSCAN_SIZES, (2, 40, 50)])
def test_bscans_of_any_size(batch: int, h: int, w: int) -> None:
    net = _tiny(stride=64)
    with torch.no_grad():
        out = net(torch.rand(batch, 1, h, w) * 2 - 1)
    assert out.logits.shape == (batch, 2, h, w)
    residual = out.aux["residual"]
    assert residual.shape == (batch, h, w) and torch.isfinite(residual).all()
    assert float(residual.min()) >= 0 and float(residual.max()) <= 2
    torch.testing.assert_close(out.logits[:, 1], residual)
    assert out.aux["recon"].shape == (batch, 1, h, w)
    assert out.aux["scan_score"].shape == (batch,)


def test_scan_score_is_the_max_or_mean_of_patch_scores() -> None:
    x = torch.rand(1, 1, 64, 128) * 2 - 1
    with torch.no_grad():
        patch = _tiny().izif(extract_patches(x[0], [0], [0, 32, 64]))["score"]
        assert float(_tiny(stride=32)(x).aux["scan_score"][0]) == pytest.approx(
            float(patch.max()), rel=1e-5
        )
        mean = _tiny(stride=32, scan_reduction="mean")(x).aux["scan_score"][0]
    assert float(mean) == pytest.approx(float(patch.mean()), rel=1e-5)


def test_izif_terms_by_hand() -> None:
    net = _tiny(kappa=2.0)
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        out = net.izif(x)
        recon = net.generator(net.encoder(x))
        image = (x - recon).square().mean(dim=(1, 2, 3))
        feature = (net.critic.features(x) - net.critic.features(recon)).square().mean(1)
    torch.testing.assert_close(out["image"], image)
    torch.testing.assert_close(out["score"], image + 2.0 * feature)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="scan_reduction"):
        FAnoGAN(dim=4, scan_reduction="median")
    with pytest.raises(ValueError, match="stride"):
        FAnoGAN(dim=4, stride=65)
