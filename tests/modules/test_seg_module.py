"""SegModule speed options: channels-last and torch.compile give the eager model's outputs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import hydra
import pytest
import torch

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
