"""SegModule: speed options give the eager model's outputs; evaluation does not depend on the
batch size."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import hydra
import pytest
import torch

from octseg.data.base import InMemorySegDataset, PadCollate
from octseg.metrics.suite import MetricSuite
from octseg.models.base import SegOutput
from octseg.modules.seg_module import SegModule, forward_by_size
from octseg.training import train
from tests.conftest import DUKE_EXPORT, requires_duke


def _module(make_cfg, *overrides: str) -> torch.nn.Module:
    return hydra.utils.instantiate(make_cfg("model=unet_small", *overrides).model)


def _same_weights(target: torch.nn.Module, source: torch.nn.Module) -> None:
    target.load_state_dict(source.state_dict())


def test_speed_options_and_their_defaults_keep_the_state_dict_keys(make_cfg) -> None:
    # compile is opt-in everywhere; channels-last is on where it was measured to help (U-Net).
    cfg = make_cfg("model=unet_small")
    assert cfg.model.channels_last is True and cfg.model.compile is False
    assert make_cfg("model=monai_segresnet", subdir="b").model.channels_last is False
    eager = _module(make_cfg, "model.channels_last=false")
    fast = _module(make_cfg)
    assert fast.channels_last is True and eager.channels_last is False
    # Checkpoints of either setting load into the other.
    assert list(fast.state_dict()) == list(eager.state_dict())


def test_channels_last_gives_the_same_logits(make_cfg) -> None:
    torch.manual_seed(0)
    eager = _module(make_cfg, "model.channels_last=false").eval()
    fast = _module(make_cfg, "model.channels_last=true").eval()
    _same_weights(fast, eager)
    x = torch.randn(2, 1, 100, 147)  # odd size: padding and crop-back under channels-last too
    with torch.no_grad():
        expected, got = eager(x).logits, fast(x).logits
    assert got.shape == (2, 10, 100, 147)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile's CPU backend (inductor) needs a C++ compiler",
)
def test_compiled_module_matches_eager_and_trains_end_to_end(make_cfg) -> None:
    torch.manual_seed(0)
    eager = _module(make_cfg, "model.channels_last=false").eval()
    compiled = _module(make_cfg, "model.compile=true", "model.channels_last=false").eval()
    # The compiled wrapper stays out of the state dict: no `_orig_mod.` keys, checkpoints portable.
    assert list(compiled.state_dict()) == list(eager.state_dict())
    _same_weights(compiled, eager)
    x = torch.randn(1, 1, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).logits, eager(x).logits, rtol=1e-4, atol=1e-4)

    cfg = make_cfg("model=unet_small", "model.compile=true", "trainer.max_epochs=1")
    metrics = train(cfg)
    assert math.isfinite(metrics["test/dice"])
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any("_orig_mod" in key for key in ckpt["state_dict"])


class _LabelsAsLogits(torch.nn.Module):
    """A 'network' whose logits are the one-hot of the label map it receives as its image."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # optimisers need a parameter

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(image[:, 0].long(), self.num_classes)
        return onehot.permute(0, 3, 1, 2).float() + self.anchor


class _ZeroLoss(torch.nn.Module):
    def forward(self, output, batch) -> dict[str, torch.Tensor]:
        return {"loss": output.logits.sum() * 0}


def test_eval_step_passes_the_batch_spacing_to_the_suite(monkeypatch) -> None:
    rows = torch.arange(20).view(20, 1).expand(20, 6)
    target = (rows >= 8).long() + (rows >= 12).long()  # surfaces at rows 8 and 12
    pred = (rows >= 10).long() + (rows >= 14).long()  # both 2 rows too deep
    suite = MetricSuite(
        families=["boundary"],
        num_classes=3,
        spacing_um=[1.0, 1.0],
        anatomy={"ordered_labels": [0, 1, 2]},
    )
    module = SegModule(_LabelsAsLogits(3), _ZeroLoss(), torch.optim.SGD, val_metrics=suite)
    monkeypatch.setattr(module, "_log_losses", lambda *args, **kwargs: None)  # no trainer
    batch = {
        "image": torch.stack([pred, pred])[:, None].float(),
        "mask": torch.stack([target, target]),
        "volume_index": torch.tensor([0, 1]),
        "spacing_um": torch.tensor([[3.87, 11.3, 120.0], [5.0, 11.3, float("nan")]]),
    }
    module.validation_step(batch, 0)
    mad = module.val_metrics.per_scan()["boundary"]["mad_um"][:, 0]
    assert mad.tolist() == pytest.approx([7.74, 10.0])
class _SampleMean(torch.nn.Module):
    """Logits that depend on every pixel the network sees (like Y-Net's global Fourier branch):
    any padding or batch partner changes them."""

    def forward(self, x: torch.Tensor) -> SegOutput:
        centred = x - x.mean(dim=(0, 2, 3), keepdim=True)
        return SegOutput(
            logits=torch.cat([centred, -centred], dim=1),
            aux={"low_res": [centred[..., ::2, ::2]], "count": 7},
            reg={"mean": x.mean()},
        )


def test_forward_by_size_runs_each_true_size_on_its_own() -> None:
    torch.manual_seed(0)
    scans = [torch.rand(1, 12, w) for w in (9, 12, 9)]
    batch = PadCollate(255)([
        {"image": s, "case_id": str(i), "orig_hw": torch.tensor(s.shape[-2:])}
        for i, s in enumerate(scans)
    ])  # fmt: skip
    net = _SampleMean()
    out = forward_by_size(net, batch["image"], batch["orig_hw"])
    assert out.logits.shape == (3, 2, 12, 12) and out.aux["count"] == 7
    narrow = net(torch.stack([scans[0], scans[2]]))
    torch.testing.assert_close(out.logits[[0, 2], :, :, :9], narrow.logits)
    torch.testing.assert_close(out.logits[1], net(scans[1][None]).logits[0])
    assert (out.logits[[0, 2], :, :, 9:] == 0).all()
    torch.testing.assert_close(out.aux["low_res"][0][[0, 2], :, :, :5], narrow.aux["low_res"][0])
    expected_reg = (2 * narrow.reg["mean"] + net(scans[1][None]).reg["mean"]) / 3
    torch.testing.assert_close(out.reg["mean"], expected_reg)


def _duke_scans_of_two_widths() -> InMemorySegDataset:
    from octseg.data.duke import load_duke_scans

    wanted = ["Subject_09_00", "Subject_10_00", "Subject_09_05", "Subject_10_05"]
    scans = {s["case_id"]: s for s in load_duke_scans(DUKE_EXPORT)}
    chosen = [scans[name] for name in wanted]
    assert len({s["image"].shape[1] for s in chosen}) == 2  # widths 506 and 524
    return InMemorySegDataset(
        [s["image"] for s in chosen], [s["mask"] for s in chosen], wanted,
        [s["volume_id"] for s in chosen], mean=0.179, std=0.211,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.realdata
@requires_duke()
@pytest.mark.parametrize("model", ["unet_small", "ynet"])
def test_evaluation_does_not_depend_on_the_batch_size(make_cfg, model: str) -> None:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    dataset = _duke_scans_of_two_widths()
    cfg = make_cfg(f"model={model}", "dataset=duke", "metrics=fast")
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    results = {}
    for batch_size in (1, 2, 4):
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=PadCollate(255))
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.test(module, loader, verbose=False)
        preds = [r for batch in trainer.predict(module, loader) for r in batch]
        outputs = {r["case_id"]: (r["pred"], r["probs"]) for r in preds}
        results[batch_size] = (outputs, module.test_results)
    outputs_1, metrics_1 = results[1]
    assert [tuple(p.shape) for p, _ in outputs_1.values()] == [(496, 506), (496, 524)] * 2
    for batch_size in (2, 4):
        outputs, metrics = results[batch_size]
        for key, (labels, probs) in outputs_1.items():
            assert torch.equal(outputs[key][0], labels), (batch_size, key)
            # Untrained nets often predict one class nearly everywhere: compare probabilities too.
            torch.testing.assert_close(outputs[key][1], probs, rtol=0, atol=1e-6)
        assert metrics.keys() == metrics_1.keys() and len(metrics) > 10
        for key, value in metrics_1.items():
            assert math.isclose(metrics[key], value, abs_tol=1e-6) or (
                math.isnan(value) and math.isnan(metrics[key])
            ), (batch_size, key, value, metrics[key])
