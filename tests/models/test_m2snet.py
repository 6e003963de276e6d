"""M2SNet specifics: parameter counts, the all-ones subtraction filters, backbone weights,
the LossNet kept out of optimiser and checkpoint, any size, training with its own loss."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torchvision.models import vgg

from octseg.losses import Objective
from octseg.losses.perceptual import LossNetPerceptualLoss
from octseg.losses.structure import StructureLoss
from octseg.models.m2snet import AllOnesFilter, M2SNet
from octseg.models.wrappers import PadToDivisor
from octseg.modules.seg_module import SegModule
from octseg.profiling import count_parameters as _count
from tests.models.model_checks import (
    ODD_BSCAN_SIZES,
    banded_batch,
    check_odd_size,
    fit_steps,
    params_without_grad,
)


def test_parameter_counts_match_the_official_structure() -> None:
    """Official M2SNet (3 channels, 1 class): Res2Net-50 v1b without its unused classifier
    (23,669,352) + head (4,023,233). methods.md's 27.67 M is the seed's variant (7x7 stem at
    1 channel, learnable depthwise CNN1: 27,669,385), within 0.5 %."""
    official = M2SNet(3, 1)
    assert _count(official.resnet) == 23_669_352
    assert _count(official) == 27_692_585
    assert abs(_count(official) - 27.67e6) / 27.67e6 < 0.005
    # The all-ones filters add only their two BatchNorms (MSNet has none).
    assert _count(official) - _count(M2SNet(3, 1, kernel_sizes=())) == 2 * 128
    # Duke: 1 channel (stem conv 3 -> 1 input: -576) and 10 classes (+9 x 577).
    assert _count(M2SNet(1, 10)) == 27_692_585 - 576 + 9 * 577 == 27_697_202


def test_all_ones_filter_is_a_dense_all_ones_convolution() -> None:
    torch.manual_seed(0)
    unit = AllOnesFilter(channels=4, kernel_size=5)
    x = torch.randn(2, 4, 9, 11)
    dense = F.conv2d(x, torch.ones(4, 4, 5, 5), padding=2)  # upstream's CNN1 kernel
    torch.testing.assert_close(unit.box_sum(x), dense, rtol=1e-5, atol=1e-5)
    # A buffer: no parameter, no state-dict entry, moved with the module.
    assert [n for n, _ in unit.named_parameters()] == ["norm.weight", "norm.bias"]
    assert "ones" not in unit.state_dict() and unit.ones.shape == (1, 1, 5, 5)
    with pytest.raises(ValueError, match="odd kernel size"):
        AllOnesFilter(4, 4)


def test_all_ones_filter_on_a_hand_built_case() -> None:
    x = torch.zeros(1, 2, 5, 5)
    x[0, 0, 2, 2] = 1.0
    x[0, 1, 0, 0] = 2.0
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] += 1.0  # 3x3 windows that contain the centre pixel
    expected[0:2, 0:2] += 2.0  # windows that contain the corner pixel (zero padding)
    out = AllOnesFilter(2, 3).box_sum(x)
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[0, 1], expected)  # every output channel sums all inputs


def test_subtraction_unit_on_constant_maps() -> None:
    """|A - B| + sum_k |F_k(A) - F_k(B)| with A = 1 (half size, upsampled), B = 0, identity
    BatchNorm (eval, fresh statistics): 1 + 9C + 25C away from the borders."""
    net = M2SNet(1, 2).eval()
    c = 64
    coarse = torch.ones(1, c, 6, 7)
    fine = torch.zeros(1, c, 12, 14)
    with torch.no_grad():
        out = net.subtract(coarse, fine, nn.Identity())
        same = net.subtract(fine, fine, nn.Identity())
    bn = 1.0 / (1.0 + 1e-5) ** 0.5
    assert out.shape == fine.shape
    interior = out[..., 2:-2, 2:-2]
    torch.testing.assert_close(interior, torch.full_like(interior, 1 + (9 + 25) * c * bn))
    assert out[0, 0, 0, 0] == pytest.approx(1 + (4 + 9) * c * bn, rel=1e-5)  # corner
    torch.testing.assert_close(same, torch.zeros_like(fine))


def test_filters_are_shared_by_every_unit() -> None:
    net = M2SNet(1, 3)
    assert [f.kernel_size for f in net.filters] == [3, 5]
    assert sum(isinstance(m, AllOnesFilter) for m in net.modules()) == 2
    assert [len(units) for units in net.units] == [4, 3, 2, 1]


@pytest.mark.parametrize(("batch", "h", "w"), ODD_BSCAN_SIZES)
def test_any_bscan_size(batch: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    check_odd_size(M2SNet(1, 10), batch, h, w, num_classes=10)


def test_pretrained_rgb_weights_are_loaded_and_summed_for_one_channel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rgb = timm.create_model("res2net50d", pretrained=False)  # with its 1000-class classifier
    path = tmp_path / "res2net50_v1b.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in rgb.state_dict().items()}}, path)
    net = M2SNet(1, 10, pretrained_path=str(path))
    stem = rgb.state_dict()["conv1.0.weight"]
    torch.testing.assert_close(net.resnet.conv1[0].weight, stem.sum(dim=1, keepdim=True))
    torch.testing.assert_close(net.resnet.layer3[2].convs[1].weight, rgb.layer3[2].convs[1].weight)
    torch.testing.assert_close(net.resnet.layer4[0].bn3.running_var, rgb.layer4[0].bn3.running_var)
    # A grey image seen as RGB gives the same stem response as the summed kernel.
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(
        net.resnet.conv1[0](x), rgb.conv1[0](x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5
    )


def test_bad_pretrained_files_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pretrained_path"):
        M2SNet(1, 10, pretrained_path=str(tmp_path / "none.pth"))
    bad = tmp_path / "vgg.pth"
    torch.save({"conv1.0.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(ValueError, match="Res2Net-50 v1b"):
        M2SNet(1, 10, pretrained_path=str(bad))


def _vgg_file(path: Path) -> str:
    torch.manual_seed(0)
    features = vgg.make_layers(vgg.cfgs["D"])[:23]
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return str(path)


def _m2snet_objective(vgg_path: str | None, size: int | None = 224) -> Objective:
    """conf/loss/m2snet.yaml: structure + 0.1 x LossNet."""
    return Objective(
        {
            "structure": StructureLoss(),
            "lossnet": LossNetPerceptualLoss(weights_path=vgg_path, size=size),
        },
        {"structure": 1.0, "lossnet": 0.1},
    )


def test_lossnet_is_outside_the_optimiser_and_the_checkpoint(tmp_path: Path) -> None:
    objective = _m2snet_objective(_vgg_file(tmp_path / "vgg16.pth"), size=32)
    vgg_params = {id(p) for block in objective.terms["lossnet"].blocks for p in block.parameters()}
    module = SegModule(
        net=M2SNet(1, 3),
        objective=objective,
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True),
    )
    optimiser = module.configure_optimizers()
    optimised = [p for group in optimiser.param_groups for p in group["params"]]
    assert vgg_params and not vgg_params & {id(p) for p in optimised}
    assert len(optimised) == len(list(module.net.parameters()))
    state = module.state_dict()
    assert all(k.startswith("net.") for k in state), [k for k in state if "net." not in k][:5]
    assert sum(v.numel() for k, v in state.items() if k.endswith("weight")) < 27.8e6
    # One training step: the network learns, the VGG does not move.
    before = [p.clone() for block in objective.terms["lossnet"].blocks for p in block.parameters()]
    module.train()
    mask = torch.randint(0, 3, (2, 64, 64))
    _, terms = module.model_step({"image": torch.randn(2, 1, 64, 64), "mask": mask})
    assert terms["lossnet"].item() > 0
    torch.testing.assert_close(terms["loss"], terms["structure"] + 0.1 * terms["lossnet"])
    terms["loss"].backward()
    optimiser.step()
    after = [p for block in objective.terms["lossnet"].blocks for p in block.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    missing = params_without_grad(module.net)
    assert not missing, missing[:5]


def test_overfits_one_batch_with_its_own_loss() -> None:
    torch.manual_seed(0)
    net = PadToDivisor(M2SNet(1, 4))
    batch = banded_batch(4, 32, 40, shifts=(0, 1))
    history = fit_steps(net, _m2snet_objective(None), batch, steps=10, lr=1e-3)
    losses = [t["loss"] for t in history]
    assert min(losses[-3:]) < 0.3 * losses[0], losses


def test_experiment_config_wires_the_recipe(make_cfg) -> None:
    cfg = make_cfg("experiment=m2snet_duke", "dataset=synthetic_small", fast=False)
    assert cfg.model.net._target_ == "octseg.models.m2snet.M2SNet"
    assert cfg.optimizer.lr == 0.05 and cfg.optimizer.momentum == 0.9
    assert cfg.optimizer.weight_decay == 5e-4 and cfg.optimizer.nesterov
    assert cfg.dataset.datamodule.batch_size == 16 and cfg.trainer.max_epochs == 100
    assert cfg.loss.weights.structure == 1.0 and cfg.loss.weights.lossnet == 0.1
    assert cfg.loss.terms.lossnet.weights_path is None
    # The official triangular lr, (1 - |2 (e + 1) / (E + 1) - 1|) x 0.05, per epoch.
    import hydra

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05, momentum=0.9)
    scheduler = hydra.utils.instantiate(cfg.scheduler.factory)(optimizer=opt)
    assert cfg.scheduler.interval == "epoch"
    epochs = cfg.trainer.max_epochs
    for epoch in range(epochs):
        official = (1 - abs((epoch + 1) / (epochs + 1) * 2 - 1)) * 0.05
        assert opt.param_groups[0]["lr"] == pytest.approx(official, abs=1e-3)
        if epoch < 50:
            assert opt.param_groups[0]["lr"] == pytest.approx(official, rel=1e-3)
        opt.step()
        scheduler.step()


def test_goals_experiment_is_the_duke_recipe_on_goals_and_runs(make_cfg, tmp_path: Path) -> None:
    from octseg.data.goals import prepare_goals
    from octseg.training import train
    from tests.data.prepared_run import write_split
    from tests.data.release_fixtures import write_goals_release

    duke = make_cfg("experiment=m2snet_duke", subdir="duke", fast=False)
    data = tmp_path / "data"
    prepare_goals(write_goals_release(tmp_path / "release"), data / "goals")
    split = write_split(tmp_path / "split.json", ["train_0001", "train_0002"], ["train_0003"],
                        ["train_0004"], unit="volume")  # fmt: skip
    cfg = make_cfg("experiment=m2snet_goals", f"paths.data_dir={data}", "debug=fdr",
                   "logger=csv", f"dataset.split={split}", "dataset.datamodule.batch_size=2",
                   "~callbacks.rich_progress_bar", "~callbacks.model_summary",
                   fast=False)  # fmt: skip
    for key in ("model.net", "loss", "optimizer", "scheduler", "augmentation"):
        ours, theirs = (OmegaConf.to_container(OmegaConf.select(c, key)) for c in (cfg, duke))
        assert ours == theirs, key  # unresolved: the same recipe, whatever the dataset
    recipe = make_cfg("experiment=m2snet_goals", subdir="recipe", fast=False)
    assert recipe.trainer.max_epochs == duke.trainer.max_epochs == 100
    assert recipe.dataset.datamodule.batch_size == 16 and recipe.dataset.split == "holdout"
    assert cfg.dataset.name == "goals" and cfg.experiment_name == "m2snet_goals"
    assert set(cfg.metrics.families) == set(cfg.val_metrics.families) == {"overlap"}
    metrics = train(cfg)
    assert 0.0 <= metrics["test/dice"] <= 1.0
