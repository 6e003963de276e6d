"""Masood 2024 reconstruction: fixed texture banks on hand-built images, buffers, training."""

from __future__ import annotations

import math

import pytest
import torch

from octseg.losses import DiceCELoss, Objective
from octseg.losses.auxiliary import AuxiliaryLoss
from octseg.models.blocks.texture import GLCM_FEATURES, GaborBank, HaarBank, LocalGLCM
from octseg.models.masood import Masood2024, TextureFeatures
from octseg.models.wrappers import PadToDivisor
from octseg.profiling import count_parameters
from tests.models.model_checks import ODD_BSCAN_SIZES, banded_batch, check_odd_size, fit_steps


def _grating(frequency: float, theta: float, size: int = 96, phase: float = 0.3) -> torch.Tensor:
    """``cos(2 pi f (x cos theta - y sin theta) + phase)`` as ``[1, 1, size, size]``."""
    y, x = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    u = x * math.cos(theta) - y * math.sin(theta)
    return torch.cos(2 * math.pi * frequency * u + phase)[None, None]


@pytest.mark.parametrize(("f_index", "o_index"), [(0, 0), (1, 2), (2, 3), (3, 5), (0, 4)])
def test_gabor_bank_responds_most_to_the_matching_grating(f_index: int, o_index: int) -> None:
    bank = GaborBank()
    grating = _grating(bank.frequencies[f_index], bank.orientations[o_index])
    response = bank(grating)[0, :, 32:64, 32:64].mean(dim=(1, 2))
    assert int(response.argmax()) == f_index * len(bank.orientations) + o_index
    # Energy of a matched unit-amplitude grating ~ 1/2 whatever its phase.
    assert response.max().item() == pytest.approx(0.5, abs=0.02)


def test_gabor_kernels_are_odd_zero_mean_and_give_zero_on_a_constant() -> None:
    bank = GaborBank()
    for i, size in enumerate(bank.kernel_sizes):
        kernel = getattr(bank, f"kernel{i}")
        assert size % 2 == 1 and kernel.shape[-2:] == (size, size)
        assert kernel.sum(dim=(1, 2, 3)).abs().max() < 1e-6
    out = bank(torch.full((1, 1, 40, 50), 3.0))
    assert out.shape == (1, 24, 40, 50) and out.max() < 1e-4


def test_haar_features_of_a_constant_image_are_zero_and_a_step_gives_one() -> None:
    bank = HaarBank((1, 2, 4))
    assert bank(torch.full((2, 1, 30, 31), 7.0)).abs().max() < 1e-5
    # Bright top half: a horizontal edge (top minus bottom) of height 1 at the boundary row.
    step = torch.zeros(1, 1, 30, 31)
    step[..., :15, :] = 1.0
    out = bank(step)
    for k in range(3):
        horizontal, vertical, diagonal = out[0, 3 * k : 3 * k + 3, :, 15]
        assert horizontal[14].item() == pytest.approx(1.0) or horizontal[
            15
        ].item() == pytest.approx(1.0)
        assert vertical.abs().max() < 1e-6 and diagonal.abs().max() < 1e-6
    assert all(
        getattr(bank, f"kernel{i}").shape[-1] == 2 * s + 1 for i, s in enumerate(bank.scales)
    )


def _checkerboard(h: int, w: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((y + x) % 2).float()[None, None]


@pytest.mark.parametrize("stride", [1, 4])
def test_local_glcm_constant_patch_vs_checkerboard(stride: int) -> None:
    glcm = LocalGLCM(levels=8, window=5, distances=[1], angles=[0.0], stride=stride)
    const = glcm(torch.full((1, 1, 20, 24), 2.0))
    board = glcm(_checkerboard(20, 24))
    assert const.shape == board.shape == (1, len(GLCM_FEATURES), 20, 24)
    names = {n: i for i, n in enumerate(GLCM_FEATURES)}
    c, b = const[0, :, 10, 12], board[0, :, 10, 12]
    assert c[names["contrast"]] == 0 and b[names["contrast"]] == pytest.approx(1.0)  # (L-1)^2 max
    assert c[names["homogeneity"]] == 1 and b[names["homogeneity"]] == pytest.approx(1 / 50)
    assert c[names["asm"]] == pytest.approx(1.0) and b[names["asm"]] == pytest.approx(0.5)
    assert c[names["entropy"]].abs() < 1e-6 and b[names["entropy"]] == pytest.approx(1 / 6)
    assert b[names["correlation"]] == pytest.approx(-1.0) and c[names["correlation"]] == 1


def test_local_glcm_is_per_pixel() -> None:
    """Left half constant, right half checkerboard: contrast 0 on the left, 1 on the right."""
    image = _checkerboard(16, 40)
    image[..., :20] = 0.0
    glcm = LocalGLCM(levels=8, window=5, distances=[1], angles=[0.0], stride=1)
    contrast = glcm(image)[0, 0]
    assert contrast[:, :15].max() == 0
    assert torch.allclose(contrast[:, 25:], torch.ones(16, 15))


def test_glcm_offsets_follow_skimage_angles_in_radians() -> None:
    glcm = LocalGLCM(distances=[1, 2], angles=[0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4])
    assert glcm.offsets[:4] == [(0, 1), (-1, 1), (-1, 0), (-1, -1)]
    assert glcm.offsets[4:] == [(0, 2), (-1, 1), (-2, 0), (-1, -1)]
    with pytest.raises(ValueError, match="radians"):
        LocalGLCM(angles=[0, 45, 90, 135])


def test_texture_buffers_follow_to_and_are_not_trainable() -> None:
    tex = TextureFeatures()
    buffers = dict(tex.named_buffers())
    assert buffers and not list(tex.parameters())
    tex64 = tex.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in tex64.buffers())
    out = tex64(torch.randn(1, 1, 24, 32, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (1, tex.out_channels, 24, 32)
    assert all(b.device.type == "meta" for b in TextureFeatures().to("meta").buffers())
    net = Masood2024(1, 10)
    trainable = {n for n, _ in net.named_parameters()}
    assert not any(n.startswith("texture.") for n in trainable)
    assert all(n.startswith("texture.") for n, _ in net.named_buffers() if "kernel" in n)
    assert not any("kernel" in k for k in net.state_dict())  # rebuilt from the settings


def test_parameter_count() -> None:
    """No official code: the counts of this reconstruction (one / four CNN branches)."""
    assert count_parameters(Masood2024(1, 10)) == 741_408
    # One CNN branch: 739,776 parameters, as each of the seed's four identical branches.
    assert count_parameters(Masood2024(1, 10).branches[0]) == 739_776


@pytest.mark.parametrize(("batch", "h", "w"), ODD_BSCAN_SIZES)
def test_any_bscan_size(batch: int, h: int, w: int) -> None:
    out = check_odd_size(Masood2024(1, 10), batch, h, w, num_classes=10)
    torch.testing.assert_close(out.logits, out.aux["cnn_logits"] + out.aux["texture_logits"])


def test_three_channel_input() -> None:
    net = Masood2024(3, 4).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 40)).logits.shape == (2, 4, 32, 40)


def test_overfits_one_batch_with_both_classifiers_supervised() -> None:
    torch.manual_seed(0)
    net = PadToDivisor(Masood2024(1, 10))
    batch = banded_batch(10, 32, 40, shifts=(0, 3))
    objective = Objective(
        {
            "combined": DiceCELoss(),
            "cnn": AuxiliaryLoss(DiceCELoss(), "cnn_logits"),
            "texture": AuxiliaryLoss(DiceCELoss(), "texture_logits"),
        }
    )
    losses = fit_steps(net, objective, batch, steps=20, lr=3e-3)
    for key in ("loss", "cnn"):
        assert min(v[key] for v in losses[-5:]) < 0.7 * losses[0][key], key
    # The texture classifier is linear in fixed, intensity-free features: it learns, less.
    assert min(v["texture"] for v in losses[-5:]) < 0.9 * losses[0]["texture"]


def test_experiment_config_supervises_both_classifiers(make_cfg) -> None:
    import hydra

    cfg = make_cfg("experiment=masood_duke", "dataset=synthetic_small", "augmentation=none")
    module = hydra.utils.instantiate(cfg.model).train()
    torch.manual_seed(0)
    mask = torch.randint(0, 10, (2, 32, 40))
    _, terms = module.model_step({"image": torch.randn(2, 1, 32, 40), "mask": mask})
    assert set(terms) == {"loss", "combined", "cnn", "texture"}
    torch.testing.assert_close(terms["loss"], terms["combined"] + terms["cnn"] + terms["texture"])
