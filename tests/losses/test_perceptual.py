"""M2SNet's LossNet: off without weights (with a warning), frozen and unregistered with them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import vgg

from octseg.losses.perceptual import LossNetPerceptualLoss, load_vgg16_blocks
from octseg.models.base import SegOutput


def _save_random_vgg(path: Path, prefix: str = "features.") -> Path:
    """A randomly initialised VGG-16 convolution stack in torchvision's key layout."""
    torch.manual_seed(0)
    features = vgg.make_layers(vgg.cfgs["D"])[:23]
    torch.save({prefix + k: v for k, v in features.state_dict().items()}, path)
    return path


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(32)
    mask = (rows * 3 // 32)[None, :, None].expand(2, 32, 28).contiguous()
    return mask, 6.0 * F.one_hot(mask, 3).permute(0, 3, 1, 2).float()


def test_without_weights_the_term_is_off_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="octseg.losses.perceptual"):
        term = LossNetPerceptualLoss(weights_path=None)
    assert "LossNet (perceptual) term is OFF" in caplog.text
    assert "weights_path" in caplog.text
    assert not term.enabled
    mask, _ = _batch()
    logits = torch.randn(2, 3, 32, 28, requires_grad=True)
    value = term(SegOutput(logits=logits), {"mask": mask})
    assert value.item() == 0.0
    assert list(term.parameters()) == [] and term.state_dict() == {}


@pytest.mark.parametrize("prefix", ["features.", ""])
def test_weights_from_a_file_enable_a_frozen_unregistered_vgg(
    tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _save_random_vgg(tmp_path / "vgg16.pth", prefix)
    with caplog.at_level(logging.WARNING, logger="octseg.losses.perceptual"):
        term = LossNetPerceptualLoss(weights_path=str(path)).train()
    assert term.enabled and "OFF" not in caplog.text
    saved = torch.load(path, weights_only=True)
    loaded = [p for block in term.blocks for p in block.parameters()]
    assert sum(p.numel() for p in loaded) == 7_635_264  # VGG-16 up to conv4_3 (methods.md 7.64 M)
    torch.testing.assert_close(term.blocks[0][0].weight, saved[f"{prefix}0.weight"])
    assert all(not p.requires_grad for p in loaded)
    assert not term.blocks.training  # .train() on the term does not reach the VGG
    # Outside the module registry: no parameters, no state, nothing for an optimiser.
    assert list(term.parameters()) == [] and term.state_dict() == {}
    assert [len(block) for block in term.blocks] == [4, 5, 7, 7]


def test_enabled_term_scores_predictions_and_passes_gradients(tmp_path: Path) -> None:
    # 64 x 64 instead of the official 224 x 224 keeps the CPU test fast; the maths is the same.
    term = LossNetPerceptualLoss(weights_path=str(_save_random_vgg(tmp_path / "v.pth")), size=64)
    mask, good = _batch()
    perfect = 30.0 * F.one_hot(mask, 3).permute(0, 3, 1, 2).float()
    assert term(SegOutput(logits=perfect), {"mask": mask}).item() < 1e-6
    logits = torch.zeros_like(good, requires_grad=True)
    value = term(SegOutput(logits=logits), {"mask": mask})
    assert value.item() > term(SegOutput(logits=good), {"mask": mask}).item() > 0.0
    value.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert all(p.grad is None for block in term.blocks for p in block.parameters())


def test_ignored_pixels_add_nothing(tmp_path: Path) -> None:
    term = LossNetPerceptualLoss(weights_path=str(_save_random_vgg(tmp_path / "v.pth")), size=None)
    mask, good = _batch()
    mask[:, :, :6] = 255
    noisy = good.clone()
    noisy[..., :6] = 50.0 * torch.randn(2, 3, 32, 6)
    torch.testing.assert_close(
        term(SegOutput(logits=noisy), {"mask": mask}), term(SegOutput(logits=good), {"mask": mask})
    )


def test_bad_weight_files_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights_path"):
        load_vgg16_blocks(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 1, 3, 3)}, bad)
    with pytest.raises(ValueError, match="VGG-16"):
        load_vgg16_blocks(bad)
