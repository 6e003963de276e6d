"""SegModule speed options: channels-last and torch.compile give the eager model's outputs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import hydra
import pytest
import torch

from octseg.metrics.suite import MetricSuite
from octseg.modules.seg_module import SegModule
from octseg.training import train


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
