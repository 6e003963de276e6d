"""SD-LayerNet's semi-supervised module: mixed batches, unlabelled-only batches, validation
per B-scan size, overfitting, and fast dev runs through train.py (synthetic and Duke)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from octseg.models.sd_layernet import SDLayerNet
from octseg.modules.sd_layernet import SDLayerNetModule, surface_targets
from octseg.training import train
from tests.conftest import CONF_DIR, SHARED_DIR, compose_config, requires_duke

SMALL = {"channels": (4, 8, 8, 8, 8), "feature_channels": 8, "predictor_channels": 4,
         "predictor_kernel": 3, "encoder_grid": 2}  # fmt: skip
REGIONS = [0, 1, 2]  # label 3 plays the fluid inside region 1


def _objective(name: str) -> torch.nn.Module:
    loss = OmegaConf.load(CONF_DIR / "loss" / f"{name}.yaml")
    cfg = OmegaConf.create({"dataset": {"ignore_index": 255}, "loss": loss})
    return hydra.utils.instantiate(cfg.loss)


def make_module(alpha: float = 0.5, lr: float = 1e-3) -> SDLayerNetModule:
    """A small SD-LayerNet module (4 classes, 3 regions) with the configured objectives."""
    return SDLayerNetModule(
        net=SDLayerNet(1, 4, REGIONS, **SMALL),
        objective=_objective("sd_layernet"),
        unsup_objective=_objective("sd_layernet_unsup"),
        optimizer=functools.partial(torch.optim.Adam, lr=lr),
        alpha=alpha,
    )


def toy_batch(labelled: list[bool], h: int = 32, w: int = 40, seed: int = 0) -> dict:
    """B-scans with two wavy surfaces; regions 0/1/2 at intensities 0/1/2 plus noise; a fluid
    pocket (label 3) inside region 1; masks of unlabelled rows all ignore_index (PadCollate)."""
    g = torch.Generator().manual_seed(seed)
    n = len(labelled)
    x = torch.arange(w)
    rows = torch.arange(h)[None, :, None]
    masks, images = [], []
    for i in range(n):
        top = (10 + 2 * torch.sin(x / 6 + i)).round().long()
        bottom = top + 9 + i % 3
        label = (rows >= top).long() + (rows >= bottom).long()
        label[0, 14:16, 18:22] = 3
        masks.append(label[0])
        images.append(label.float() + 0.1 * torch.randn(1, h, w, generator=g))
    mask = torch.stack(masks)
    flags = torch.tensor(labelled)
    batch = {"image": torch.stack(images), "labelled": flags,
             "orig_hw": torch.tensor([[h, w]] * n), "case_id": [f"c{i}" for i in range(n)]}
    if flags.any():
        batch["mask"] = torch.where(flags[:, None, None], mask, torch.full_like(mask, 255))
    return batch


def _captured(module: SDLayerNetModule) -> dict:
    logged: dict = {}
    module._log_losses = lambda stage, losses, n: logged.update(losses)  # type: ignore[method-assign]
    return logged


def test_surface_targets_count_fluid_as_its_layer() -> None:
    batch = toy_batch([True])
    targets = surface_targets(batch["mask"], REGIONS)
    region = targets["region_target"][0]
    assert region.max() == 2 and (region[14:16, 18:22] == 1).all()
    top = (10 + 2 * torch.sin(torch.arange(40) / 6)).round()
    torch.testing.assert_close(targets["surface_rows"][0, 0], top)
    assert targets["surface_valid"].all()


def test_mixed_batch_weighs_both_parts_and_both_give_gradients() -> None:
    torch.manual_seed(0)
    module = make_module(alpha=0.5).train()
    logged = _captured(module)
    batch = toy_batch([True, False, True, False])
    loss = module.training_step(batch, 0)
    sup, unsup = logged["sup/loss"], logged["unsup/loss"]
    torch.testing.assert_close(loss, 0.5 * sup + 0.5 * unsup)
    assert "sup/segmentation" in logged and "unsup/spread" in logged
    assert "unsup/segmentation" not in logged
    params = [p for p in module.net.parameters() if p.requires_grad]
    for part in (sup, unsup):
        grads = torch.autograd.grad(part, params, retain_graph=True, allow_unused=True)
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    # The unlabelled rows' images reach the unsupervised part only.
    other = dict(batch, image=batch["image"].clone())
    other["image"][1] += 1.0
    torch.manual_seed(0)
    module2 = make_module(alpha=0.5).train()
    logged2 = _captured(module2)
    module2.training_step(other, 0)
    assert not torch.isclose(logged2["unsup/loss"], unsup)
    # alpha = 1 ignores the unlabelled part entirely.
    torch.manual_seed(0)
    only_sup = make_module(alpha=1.0).train()
    _captured(only_sup)
    torch.testing.assert_close(only_sup.training_step(batch, 0), sup)


def test_an_all_unlabelled_batch_trains() -> None:
    torch.manual_seed(0)
    module = make_module().train()
    logged = _captured(module)
    batch = toy_batch([False, False])
    assert "mask" not in batch
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss) and not any(k.startswith("sup/") for k in logged)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.parameters())


def test_a_training_batch_of_one_is_refused_with_the_setting_to_change() -> None:
    module = make_module().train()
    with pytest.raises(ValueError, match="dataset.datamodule.batch_size"):
        module.training_step(toy_batch([True]), 0)


def test_validation_losses_per_size_group_match_separate_batches() -> None:
    torch.manual_seed(0)
    module = make_module().eval()
    a, b = toy_batch([True, True], w=40), toy_batch([True], w=33, seed=1)
    padded = torch.nn.functional.pad(b["image"], (0, 7, 0, 0), mode="replicate")
    mask_b = torch.nn.functional.pad(b["mask"], (0, 7), value=255)
    batch = {"image": torch.cat([a["image"], padded]), "mask": torch.cat([a["mask"], mask_b]),
             "orig_hw": torch.tensor([[32, 40], [32, 40], [32, 33]])}  # fmt: skip
    with torch.no_grad():
        output, losses = module.model_step(batch)
        _, la = module.model_step(a)
        _, lb = module.model_step(b)
    assert output.logits.shape == (3, 4, 32, 40)
    torch.testing.assert_close(losses["loss"], (2 * la["loss"] + lb["loss"]) / 3)


def test_overfits_a_tiny_labelled_batch() -> None:
    torch.manual_seed(0)
    module = make_module(lr=3e-3).train()
    logged = _captured(module)
    optimizer = module.configure_optimizers()
    batch = toy_batch([True, True, True])
    seg = []
    for _ in range(30):
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seg.append(float(logged["sup/segmentation"].detach()))
    assert min(seg[-5:]) < 0.5 * seg[0], f"segmentation loss {seg[0]:.3f} -> {seg[-5:]}"


def _run(tmp_path: Path, *overrides: str) -> dict[str, float]:
    cfg = compose_config(tmp_path, ["debug=fdr", *overrides])
    try:
        return train(cfg)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.slow
def test_fast_dev_run_on_synthetic_semi_supervised(tmp_path: Path) -> None:
    metrics = _run(tmp_path, "model=sd_layernet", "+dataset.datamodule.labelled_fraction=0.5",
                   "dataset.datamodule.batch_size=4")  # fmt: skip
    assert math.isfinite(metrics["test/dice"]) and (tmp_path / "metrics.json").is_file()


@pytest.mark.slow
@requires_duke()
def test_fast_dev_run_on_duke(tmp_path: Path) -> None:
    # Batch 2: a step at the recipe's batch 7 of full B-scans peaks at about 8 GB on CPU.
    metrics = _run(tmp_path, "experiment=sd_layernet_duke_semi",
                   f"paths.data_dir={SHARED_DIR / 'datasets'}", "augmentation=none",
                   "dataset.datamodule.batch_size=2")  # fmt: skip
    assert math.isfinite(metrics["test/dice"]) and math.isfinite(metrics["test/mad_um"])


def _kermany_release(data_dir: Path, shape: tuple[int, int] = (128, 128)) -> None:
    """A prepared Kermany folder: 4 training B-scans of ``shape``, 1 test B-scan."""
    from octseg.data.kermany import prepare_kermany
    from tests.data.image_level_fixtures import write_jpeg

    release = data_dir.parent / "kermany_release" / "OCT2017"
    names = ["train/NORMAL/NORMAL-11-1", "train/NORMAL/NORMAL-11-2", "train/DME/DME-12-1",
             "train/CNV/CNV-13-1", "test/CNV/CNV-21-1"]  # fmt: skip
    for k, name in enumerate(names):
        write_jpeg(release / f"{name}.jpeg", k, shape)
    prepare_kermany(release.parent, data_dir / "kermany")


def test_fast_dev_run_with_kermany_as_the_unlabelled_source(tmp_path: Path, caplog) -> None:
    _kermany_release(tmp_path / "data")
    with caplog.at_level("INFO", logger="octseg.data.base"):
        metrics = _run(tmp_path / "run", "model=sd_layernet", "+dataset@unlabelled=kermany",
                       f"paths.data_dir={tmp_path / 'data'}", "dataset.datamodule.batch_size=4",
                       "dataset.datamodule.num_train=2",  # 2 labelled + 3 lent: both in a batch
                       "+dataset.datamodule.unlabelled_max_bscans=3")  # fmt: skip
    assert math.isfinite(metrics["test/dice"])
    assert math.isfinite(metrics["train/loss/unsup/loss"])  # the lent scans were trained on
    assert "Unlabelled training B-scans from kermany at" in caplog.text
    assert "3 of its 4 training B-scans" in caplog.text


def test_duke_kermany_experiment_is_the_duke_recipe_plus_kermany() -> None:
    def compose(experiment: str) -> dict:
        cfg = compose_config(Path("/tmp/unused"), [f"experiment={experiment}"], fast=False)
        GlobalHydra.instance().clear()
        return OmegaConf.to_container(cfg)

    duke, ours = compose("sd_layernet_duke"), compose("sd_layernet_duke_kermany")
    lent = ours.pop("unlabelled")
    assert lent["name"] == "kermany" and lent["split"] == "official"
    assert ours["dataset"]["datamodule"].pop("unlabelled_max_bscans") == 462
    assert duke.pop("unlabelled") is None
    for cfg in (ours, duke):
        cfg.pop("experiment_name"), cfg.pop("hydra")  # hydra: the overrides given
    assert ours == duke  # the recipe itself is unchanged


@pytest.mark.slow
@requires_duke()
def test_fast_dev_run_of_the_duke_kermany_experiment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _kermany_release(data, (496, 512))
    (data / "duke_dme").symlink_to(SHARED_DIR / "datasets" / "duke_dme")
    metrics = _run(tmp_path / "run", "experiment=sd_layernet_duke_kermany",
                   f"paths.data_dir={data}", "dataset.datamodule.batch_size=2")  # fmt: skip
    assert math.isfinite(metrics["test/dice"]) and math.isfinite(metrics["test/mad_um"])
