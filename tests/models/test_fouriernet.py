"""FourierNet specifics: the seed's parameter counts, FD maps in ``aux`` at any input size,
gradients through both stages with the paper's objective, and overfitting one batch."""

from __future__ import annotations

import hydra
import pytest
import torch

from octseg.losses import DiceCELoss, Objective
from octseg.losses.fourier import FourierDescriptorLoss
from octseg.models.blocks.plain_unet import PlainUNetBlock
from octseg.models.fouriernet import FourierNet
from octseg.models.wrappers import PadToDivisor
from octseg.profiling import count_parameters as _count
from tests.models.model_checks import (
    ODD_BSCAN_SIZES,
    check_odd_size,
    fit_steps,
    params_without_grad,
)


@pytest.mark.parametrize(
    ("maps", "expected", "catalogue"),
    # Torch-equivalent counts of the Keras deepModels.cascaded (1 input channel, 2 classes):
    # methods.md 3.2 gives ~3.92 M (1 FD map) and ~4.71 M (2); the exact sums of the structure
    # (encoder 1,178,480; decoder 783,840; heads 17 / 34) are asserted.
    [(1, 3_924_835, 3.92e6), (2, 4_708_836, 4.71e6)],
)
def test_parameter_count_matches_the_seed_structure(maps: int, expected: int, catalogue: float):
    net = FourierNet(in_channels=1, num_classes=2, num_harmonics=maps)
    assert _count(net) == expected
    assert abs(expected - catalogue) / catalogue < 0.005


def test_multiclass_builds_one_decoder_per_map_or_a_shared_one() -> None:
    net = FourierNet(1, 10)
    assert net.num_fd_maps == 9 and len(net.fd_decoders) == 9
    assert _count(net) == 10_196_979
    shared = FourierNet(1, 10, shared_fd_decoder=True)
    assert len(shared.fd_decoders) == 1 and shared.fd_decoders[0].head.out_channels == 9
    assert FourierNet(1, 10, fd_classes=[5], num_harmonics=3).num_fd_maps == 3


def test_blocks_follow_the_keras_layout() -> None:
    block = PlainUNetBlock(3, 8, dropout=0.2)
    kinds = [type(m).__name__ for m in block]
    assert kinds == ["Conv2d", "ReLU", "Dropout", "Conv2d", "ReLU"]
    assert all(not m.bias.detach().any() for m in block if isinstance(m, torch.nn.Conv2d))
    bound = (6 / (3 * 9)) ** 0.5  # he_uniform: sqrt(6 / fan_in)
    assert float(block[0].weight.detach().abs().max()) <= bound
    net = FourierNet(1, 2)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    ups = [m for m in net.modules() if isinstance(m, torch.nn.Upsample)]
    assert ups and all(m.mode == "nearest" for m in ups)


def test_invalid_settings_raise() -> None:
    with pytest.raises(ValueError, match="fd_classes"):
        FourierNet(1, 3, fd_classes=[3])
    with pytest.raises(ValueError, match="at least one FD map"):
        FourierNet(1, 3, fd_classes=[])
    with pytest.raises(ValueError, match="features"):
        FourierNet(1, 3, features=[16])


@pytest.mark.parametrize(("batch", "h", "w"), ODD_BSCAN_SIZES)
def test_odd_sizes_give_input_size_logits_and_fd_maps(batch: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    out = check_odd_size(FourierNet(1, 10, num_harmonics=1), batch, h, w, num_classes=10)
    assert out.aux["fd_maps"].shape == (batch, 9, h, w)
    assert torch.isfinite(out.aux["fd_maps"]).all()


def _toy_batch(h: int = 32, w: int = 48) -> dict[str, torch.Tensor]:
    """Two B-scan-like images: three bands with wavy boundaries (no symmetry, so every FD map
    varies) and a blob of class 3, intensity coded by label, some columns unannotated."""
    g = torch.Generator().manual_seed(3)
    rows = torch.arange(h, dtype=torch.float32)[:, None]
    cols = torch.arange(w, dtype=torch.float32)[None, :]
    masks = []
    for phase in (0.0, 2.0):
        top = h / 3 + 3 * torch.sin(cols / 5 + phase)
        bottom = 2 * h / 3 + 2 * torch.sin(cols / 7 - phase) + cols / 12
        mask = (rows >= top).long() + (rows >= bottom).long()
        masks.append(mask)
    mask = torch.stack(masks)
    mask[0, 12:18, 8:20] = 3
    mask[0, 10:13, 8:12] = 3
    mask[1, 6:12, 30:44] = 3
    mask[1, :, -4:] = 255  # unannotated columns
    image = (mask.clamp_max(3).float() / 3 + 0.1 * torch.randn(2, h, w, generator=g))[:, None]
    return {"image": image, "mask": mask}


def _objective() -> Objective:
    return Objective(
        {
            "ce": DiceCELoss(ignore_index=255, dice_weight=0.0),
            "fd": FourierDescriptorLoss(classes=None, num_harmonics=1, ignore_index=255),
        }
    )


def test_paper_objective_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = PadToDivisor(FourierNet(1, 4, features=[8, 16, 32, 64, 128])).train()
    batch = _toy_batch(40, 52)
    losses = _objective()(net(batch["image"]), batch)
    assert set(losses) == {"loss", "ce", "fd"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    missing = params_without_grad(net)
    assert not missing, missing[:5]
    # Stage 1 learns from both terms: the FD loss alone also reaches it.
    net.zero_grad(set_to_none=True)
    _objective().terms["fd"](net(batch["image"]), batch).backward()
    assert all(p.grad is not None for p in net.net.fd_decoders.parameters())
    assert all(p.grad is None for p in net.net.seg_decoder.parameters())


def test_overfits_one_batch_with_the_paper_objective() -> None:
    torch.manual_seed(0)
    net = PadToDivisor(FourierNet(1, 4, features=[8, 16, 32, 64, 128], dropout=0.0))
    objective = _objective()
    history = fit_steps(net, objective, _toy_batch(), steps=60, lr=3e-3)
    first, last = history[0], min(history[-5:], key=lambda h: h["loss"])
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert last["ce"] < 0.3 * first["ce"] and last["fd"] < 0.6 * first["fd"], (first, last)
    assert objective.terms["fd"].cache.misses == 2  # targets computed once per mask


def test_model_and_experiment_configs_build_a_consistent_pair(make_cfg) -> None:
    cfg = make_cfg("experiment=fouriernet_duke", "paths.data_dir=/nonexistent", fast=False)
    assert cfg.optimizer._target_ == "torch.optim.Adadelta" and cfg.optimizer.lr == 0.01
    assert cfg.dataset.datamodule.batch_size == 1 and cfg.trainer.max_epochs == 500
    module = hydra.utils.instantiate(cfg.model)
    net = module.net.net
    assert isinstance(net, FourierNet) and net.num_fd_maps == 9
    fd_term = module.objective.terms["fd"]
    assert fd_term.resolved_classes(10) == net.fd_classes
    assert fd_term.num_harmonics == net.num_harmonics
