"""f-AnoGAN's module: healthy patches, the critic/generator step ratio, the frozen GAN in the
encoder stage, the validation threshold, the predict_step contract and train.py runs."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from octseg.evaluation.predictions import predict_scans
from octseg.evaluation.report import evaluate_label_maps
from octseg.models.fanogan import FAnoGAN
from octseg.modules.fanogan import (
    FAnoGANModule,
    best_dice_threshold,
    binarise,
    healthy_windows,
)
from octseg.training import train
from tests.conftest import requires_duke

FLUID = 9
TINY = [
    "model=fanogan",
    "model.net.dim=4",
    "model.net.latent_dim=8",
    "model.net.stride=64",
    "model.patches_per_step=8",
]


def _module(**kwargs: object) -> FAnoGANModule:
    torch.manual_seed(0)
    adam = functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.9))
    settings = {
        "gan_epochs": 1,
        "patches_per_step": 8,
        "fluid_labels": [FLUID],
        "centre_labels": None,
        **kwargs,
    }
    return FAnoGANModule(
        FAnoGAN(dim=4, latent_dim=8, stride=64),
        adam,
        adam,
        functools.partial(torch.optim.RMSprop, lr=1e-3, alpha=0.9),
        **settings,
    )


def _batch(seed: int = 0) -> dict:
    """Two 96 x 120 B-scans (normalised with mean 0, std 1, so images lie in [0, 1]) of
    horizontal bands, a fluid blob in the first."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(96)[:, None].expand(96, 120)
    mask = torch.stack([rows // 12, rows // 12]).long()
    mask[0, 40:52, 30:50] = FLUID
    image = (mask.float() / 10 + 0.05 * torch.randn(2, 96, 120, generator=g)).clamp(0, 1)
    return {"image": image[:, None], "mask": mask, "orig_hw": torch.tensor([[96, 120]] * 2)}


class _Stepper:
    """Runs training steps without a Trainer: the module's optimizers, plain backward."""

    def __init__(self, module: FAnoGANModule) -> None:
        self.module = module
        opts = module.configure_optimizers()
        self.opts = opts if isinstance(opts, list) else [opts]
        self.steps = [0] * len(self.opts)
        for i, opt in enumerate(self.opts):
            opt.step = self._counted(opt.step, i)
        module.optimizers = lambda: self.opts if len(self.opts) > 1 else self.opts[0]
        module.manual_backward = lambda loss: loss.backward()
        module.log = module.log_dict = lambda *a, **k: None
        module.train()

    def _counted(self, step, i: int):
        def wrapped(*args, **kwargs):
            self.steps[i] += 1
            return step(*args, **kwargs)

        return wrapped

    def run(self, n: int, batch: dict | None = None) -> list[float]:
        return [float(self.module.training_step(batch or _batch(i), i)) for i in range(n)]


def _brute_force(mask: torch.Tensor, p: int, centre: list[int] | None) -> torch.Tensor:
    b, h, w = mask.shape
    out = torch.zeros(b, h - p + 1, w - p + 1, dtype=torch.bool)
    for i in range(b):
        for y in range(h - p + 1):
            for x in range(w - p + 1):
                win = mask[i, y : y + p, x : x + p]
                ok = not bool(((win == FLUID) | (win == 255)).any())
                if centre is not None:
                    ok &= int(mask[i, y + p // 2, x + p // 2]) in centre
                out[i, y, x] = ok
    return out


def test_healthy_windows_on_a_hand_made_mask() -> None:
    mask = torch.zeros(1, 70, 80, dtype=torch.long)
    mask[0, 35:] = 3
    mask[0, 0, 0] = FLUID  # only the window at (0, 0) holds it
    mask[0, 69, 79] = 255  # only the window at (6, 16) holds it
    healthy = healthy_windows(mask, [FLUID], 255)
    assert healthy.shape == (1, 7, 17)
    expected = torch.ones(1, 7, 17, dtype=torch.bool)
    expected[0, 0, 0] = expected[0, 6, 16] = False
    assert torch.equal(healthy, expected)
    # the centre (y + 32, x + 32) must be label 3: y >= 3
    centred = healthy_windows(mask, [FLUID], 255, centre_labels=[3])
    assert torch.equal(centred, expected & (torch.arange(7) >= 3)[None, :, None])
    assert healthy_windows(mask[:, :60], [FLUID], 255).shape == (1, 0, 0)


def test_healthy_windows_match_a_brute_force_scan() -> None:
    g = torch.Generator().manual_seed(3)
    mask = torch.randint(0, 4, (2, 40, 44), generator=g)
    mask[0, 5, 7] = FLUID
    mask[1, 30, 2] = 255
    mask[1, 12, 40] = FLUID
    for centre in (None, [1, 2]):
        got = healthy_windows(mask, [FLUID], 255, centre, patch=16)
        assert torch.equal(got, _brute_force(mask, 16, centre))


def test_training_patches_hold_no_fluid() -> None:
    """Patches drawn from a batch whose first scan has fluid are healthy windows only: their
    pixels never reach the fluid intensity of the blob (its rows' band is replaced)."""
    module = _module(patches_per_step=200)
    batch = _batch()
    batch["image"][0, 0, 40:52, 30:50] = 1.0  # the fluid blob, brightest in [0, 1]
    batch["image"][1] = batch["image"][1].clamp(max=0.95)
    patches = module.healthy_patches(batch)
    assert patches.shape == (200, 1, 64, 64)
    assert float(patches.max()) < 1.0  # 1.0 in [0, 1] is 1.0 in [-1, 1]


def _image_level_module(**kwargs: object) -> FAnoGANModule:
    classes = ["CNV", "DME", "NORMAL"]
    return _module(fluid_labels=[], normal_class="NORMAL", image_classes=classes, **kwargs)


def test_image_level_patches_come_from_the_normal_class_inside_its_true_size() -> None:
    """Three padded B-scans: CNV (value 1), NORMAL 70 x 90 of a 96 x 120 batch (value 0.5,
    padding 1), DME (value 1). Every patch comes from inside the NORMAL scan."""
    module = _image_level_module(patches_per_step=300)
    assert not module.predicts_scans
    image = torch.ones(3, 1, 96, 120)
    image[1, 0, :70, :90] = 0.5
    batch = {"image": image, "class_index": torch.tensor([0, 2, 1]),
             "orig_hw": torch.tensor([[96, 120], [70, 90], [96, 120]])}  # fmt: skip
    masks = module._normal_scan_masks(batch)
    assert int((masks[1] == 0).sum()) == 70 * 90 and bool((masks[[0, 2]] == 255).all())
    patches = module.healthy_patches(batch)
    assert patches.shape == (300, 1, 64, 64)
    assert torch.allclose(patches, torch.zeros_like(patches))  # 0.5 in [0, 1] is 0 in [-1, 1]
    batch["class_index"] = torch.tensor([0, 1, 0])  # no NORMAL scan: nothing to draw
    assert module.healthy_patches(batch) is None


def test_image_level_detection_scores_by_hand() -> None:
    module = _image_level_module()
    # NORMAL (2) scores 0.1, 0.4; CNV (0) 0.3, 0.9; DME (1) 0.5.
    module._val_scores = [torch.tensor([0.1, 0.3, 0.9]), torch.tensor([0.4, 0.5])]
    module._scan_classes = [torch.tensor([2, 0, 0]), torch.tensor([2, 1])]
    out = module._scan_detection("test", by_class=True)
    # positives 0.3, 0.9, 0.5 vs negatives 0.1, 0.4: 5 of 6 pairs ranked right
    assert out["test/scan_auroc"] == pytest.approx(5 / 6)
    assert out["test/scan_auroc/CNV"] == pytest.approx(3 / 4)
    assert out["test/scan_auroc/DME"] == pytest.approx(1.0)
    assert "test/scan_auroc/NORMAL" not in out
    assert out["test/anomaly_score"] == pytest.approx(0.44)
    # AP: ranks 0.9 (+), 0.5 (+), 0.4 (-), 0.3 (+): (1 + 1 + 3/4) / 3
    assert out["test/scan_ap"] == pytest.approx((1 + 1 + 0.75) / 3)
    module._scan_classes = [torch.tensor([2, 2, 2]), torch.tensor([2, 2])]
    assert math.isnan(module._scan_detection("val", by_class=False)["val/scan_auroc"])


def test_a_normal_class_outside_the_image_classes_is_refused() -> None:
    with pytest.raises(ValueError, match=r"normal_class='HEALTHY' is not one of"):
        _module(fluid_labels=[], normal_class="HEALTHY", image_classes=["CNV", "NORMAL"])
    with pytest.raises(ValueError, match=r"fluid_labels is empty and model.normal_class"):
        _module(fluid_labels=[])


def test_train_py_trains_on_kermany_normal_and_scores_detection(make_cfg, tmp_path) -> None:
    from octseg.data.kermany import prepare_kermany
    from tests.data.image_level_fixtures import write_jpeg

    release = tmp_path / "release" / "OCT2017"
    for p, (part, n) in enumerate((("train", 3), ("val", 1), ("test", 2))):
        for c, cls in enumerate(("CNV", "DME", "DRUSEN", "NORMAL")):
            for k in range(n):  # patient ids differ between parts (a shared one is refused)
                name = f"{cls}-{100 * p + 10 * c + k}-1.jpeg"
                write_jpeg(release / part / cls / name, k, (70, 80 + 4 * k))
    prepare_kermany(release.parent, tmp_path / "data" / "kermany")
    cfg = make_cfg("experiment=fanogan_kermany", *TINY[1:], f"paths.data_dir={tmp_path / 'data'}",
                   "model.gan_epochs=1", "trainer.max_epochs=2", "dataset.datamodule.batch_size=2",
                   "callbacks.early_stopping.patience=2", "logger=csv",
                   "trainer.log_every_n_steps=1", "~callbacks.rich_progress_bar",
                   "~callbacks.model_summary", fast=False)  # fmt: skip
    metrics = train(cfg)
    assert metrics["train/stage_encoder"] == 1.0
    assert metrics["train/healthy_patches"] == 8.0  # drawn from the NORMAL scans only
    for key in ("test/scan_auroc", "test/scan_auroc/CNV", "test/scan_auroc/DRUSEN"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert 0.0 <= metrics["val/scan_auroc"] <= 1.0
    report = _report(cfg)
    assert set(report) >= {"scan_auroc", "scan_ap", "scan_auroc/DME"}
    # eval.py on the best checkpoint runs the same test_step: the same figures.
    from hydra.core.global_hydra import GlobalHydra

    from octseg.evaluation.commands import evaluate_checkpoint
    from octseg.utils.config import compose

    best = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    GlobalHydra.instance().clear()
    out = tmp_path / "eval"
    evaluate_checkpoint(compose("eval", [f"ckpt_path={best}"], output_dir=out))
    again = json.loads((out / "metrics.json").read_text())["dataset"]
    assert again["scan_auroc"] == pytest.approx(report["scan_auroc"])
    with pytest.raises(ValueError, match=r"test_step, which eval.py runs .* split='val'"):
        evaluate_checkpoint(compose("eval", [f"ckpt_path={best}", "split=val"], output_dir=out))


def test_binarise_keeps_ignore() -> None:
    mask = torch.tensor([[0, 9, 3], [255, 9, 8]])
    assert binarise(mask, [9], 255).tolist() == [[0, 1, 0], [255, 1, 0]]


def test_best_dice_threshold_by_hand() -> None:
    hist = torch.tensor([[5, 0], [3, 1], [1, 2], [0, 3]], dtype=torch.float64)
    threshold, dice = best_dice_threshold(hist)  # from bin 2: TP 5, FP 1, FN 1
    assert threshold == 0.5 and dice == pytest.approx(10 / 12)
    assert all(math.isnan(v) for v in best_dice_threshold(hist * torch.tensor([1.0, 0.0])))


def test_five_critic_steps_per_generator_step() -> None:
    module = _module()
    stepper = _Stepper(module)
    stepper.run(12)
    generator_steps, critic_steps = stepper.steps
    assert (critic_steps, generator_steps) == (12, 2)
    assert int(module.critic_steps) == 12


def test_generator_step_gives_the_critic_no_gradient() -> None:
    """The generator's backward passes through the critic without touching its gradients
    (those of the preceding critic step stay as they were), and the critic trains again
    afterwards."""
    module = _module(n_critic=1)
    stepper = _Stepper(module)
    critic = list(module.net.critic.parameters())
    seen: dict[str, list] = {}
    critic_step, generator_step = stepper.opts[1].step, stepper.opts[0].step

    def record_critic(*args, **kwargs):
        seen["after_critic"] = [p.grad.clone() for p in critic]
        return critic_step(*args, **kwargs)

    def check_generator(*args, **kwargs):
        seen["at_generator"] = [p.grad.clone() for p in critic]
        seen["generator_grad"] = all(p.grad is not None for p in module.net.generator.parameters())
        return generator_step(*args, **kwargs)

    stepper.opts[1].step, stepper.opts[0].step = record_critic, check_generator
    stepper.run(1)
    assert seen["generator_grad"]
    for a, b in zip(seen["after_critic"], seen["at_generator"], strict=True):
        assert torch.equal(a, b)
    assert all(p.requires_grad for p in critic)


def test_encoder_stage_leaves_generator_and_critic_unchanged() -> None:
    module = _module()
    module.in_encoder_stage.fill_(True)
    stepper = _Stepper(module)
    assert len(stepper.opts) == 1
    held = {id(p) for g in stepper.opts[0].param_groups for p in g["params"]}
    assert held == {id(p) for p in module.net.encoder.parameters()}
    frozen = {
        name: {k: v.clone() for k, v in part.state_dict().items()}
        for name, part in (("generator", module.net.generator), ("critic", module.net.critic))
    }
    encoder = {k: v.clone() for k, v in module.net.encoder.state_dict().items()}
    losses = stepper.run(3)
    assert all(math.isfinite(v) for v in losses)
    for name, part in (("generator", module.net.generator), ("critic", module.net.critic)):
        after = part.state_dict()  # parameters and BatchNorm statistics alike
        assert all(torch.equal(frozen[name][k], after[k]) for k in after), name
        assert not part.training and not any(p.requires_grad for p in part.parameters())
        assert all(p.grad is None for p in part.parameters())
    assert any(not torch.equal(encoder[k], v) for k, v in module.net.encoder.state_dict().items())


def test_losses_move_critic_and_drop_encoder() -> None:
    """GAN stage: the critic loss changes as it trains; encoder stage on a fixed batch: the
    izi_f loss drops."""
    module = _module()
    critic = _Stepper(module).run(10)
    assert max(critic) - min(critic) > 1e-3
    module.in_encoder_stage.fill_(True)
    batch = _batch()
    torch.manual_seed(1)
    fixed = module.healthy_patches(batch)
    module.healthy_patches = lambda _batch: fixed
    encoder = _Stepper(module).run(40, batch)
    assert np.mean(encoder[-5:]) < 0.8 * encoder[0], encoder


def test_predict_step_contract_and_evaluation_view() -> None:
    module = _module().eval()
    module.threshold.fill_(0.05)
    batch = _batch()
    batch["image"][1, :, 70:] = 0.0  # second scan padded: true size 70 x 100
    batch["image"][1, :, :, 100:] = 0.0
    batch["mask"][1, 70:] = 255
    batch["mask"][1, :, 100:] = 255
    batch["orig_hw"] = torch.tensor([[96, 120], [70, 100]])
    batch.update(case_id=["a", "b"], volume_id=["v", "v"], spacing_um=torch.ones(2, 3))
    with torch.no_grad():
        items = module.predict_step(batch, 0)
    assert [i["case_id"] for i in items] == ["a", "b"]
    for item, (h, w) in zip(items, [(96, 120), (70, 100)], strict=True):
        assert item["pred"].shape == item["target"].shape == (h, w)
        assert item["probs"].shape == (2, h, w)
        torch.testing.assert_close(item["probs"].sum(0), torch.ones(h, w))
        assert torch.equal(item["pred"], (item["probs"][1] >= 0.05).long())
        assert set(item["target"].unique().tolist()) <= {0, 1}
        assert math.isnan(float(item["scores"][0])) and math.isfinite(float(item["scores"][1]))
    assert int(items[0]["target"].sum()) == 12 * 20
    suite = module.evaluation_suite(
        {"num_classes": 10, "families": ["overlap", "boundary", "fluid"], "spacing_um": [4, 11]}
    )
    assert suite["num_classes"] == 2 and suite["anatomy"] == {"fluid_labels": [1]}
    loader = [batch]
    result = evaluate_label_maps(predict_scans(module, loader, keep_probs=True), **suite)
    for key in ("dice/fluid", "auroc/fluid", "ap/fluid", "detection_auroc/fluid"):
        assert key in result.dataset
    assert math.isfinite(result.dataset["auroc/fluid"])


def _report(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["dataset"]


def test_train_py_fast_dev_run_on_synthetic(make_cfg) -> None:
    cfg = make_cfg(*TINY, "debug=fdr")
    train(cfg)
    report = _report(cfg)
    assert {"dice/fluid", "auroc/fluid", "ap/fluid", "detection_auroc"} <= set(report)


def test_train_py_runs_both_stages(make_cfg) -> None:
    cfg = make_cfg(
        *TINY,
        "model.gan_epochs=1",
        "trainer.max_epochs=2",
        "metrics=fluid",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
    )
    metrics = train(cfg)
    assert metrics["train/stage_encoder"] == 1.0
    assert math.isfinite(metrics["test/auroc/fluid"])
    assert "test/detection_auroc/fluid" in metrics


@requires_duke()
def test_train_py_fast_dev_run_on_duke(make_cfg) -> None:
    cfg = make_cfg(
        "experiment=fanogan_duke",
        "debug=fdr",
        "paths.data_dir=" + str(Path(__file__).resolve().parents[2].parent / "shared/datasets"),
        "model.net.dim=4",
        "model.net.latent_dim=8",
        "model.net.stride=64",
        "model.patches_per_step=8",
    )
    train(cfg)
    assert "auroc/fluid" in _report(cfg)


def test_early_stopping_within_the_gan_stage_is_refused(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    from octseg.data.synthetic import SyntheticDataModule

    module = _module(gan_epochs=3)
    stop = pl.callbacks.EarlyStopping(monitor="val/dice", mode="max", patience=2)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=4,
        logger=False,
        callbacks=[stop],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    data = SyntheticDataModule(num_train=2, num_val=1, num_test=1, height=96, width=96)
    with pytest.raises(ValueError, match="model.gan_epochs=3"):
        trainer.fit(module, datamodule=data)
