"""RetiFluidNet specifics: the official parameter count, SDA and RMP by hand, heads and outputs,
trainability of every layer (the PyTorch seed's fatal defect), odd sizes, overfitting, and
fast dev runs through ``train.py``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from octseg.losses import DeepSupervisionLoss, Objective, SoftDiceLoss
from octseg.losses.connectivity import ConnectivityLoss
from octseg.models.blocks.pyramid import ResidualMultiKernelPooling
from octseg.models.retifluidnet import RetiFluidNet, SelfAdaptiveDualAttention
from octseg.models.wrappers import PadToDivisor
from octseg.profiling import count_parameters
from octseg.training import train
from tests.conftest import requires_duke
from tests.models.model_checks import banded_batch, check_odd_size, fit_steps, params_without_grad

WEIGHTS = [1.0, 1.0, 0.5, 0.25, 0.125]


def _objective() -> Objective:
    """conf/loss/retifluidnet.yaml, built by hand."""
    dice = DeepSupervisionLoss(SoftDiceLoss(), weights=WEIGHTS, normalise=False)
    return Objective(
        {"dice": dice, "connectivity": ConnectivityLoss(WEIGHTS)},
        {"dice": 1.0, "connectivity": 0.05},
    )


def _keras_count(num_classes: int, in_channels: int = 1, f: int = 32) -> int:
    """Trainable parameters of upstream's Keras model (aidialab/RetiFluidNet model.py), layer by
    layer: conv3x3 with bias, BatchNorm gamma + beta, scalar SDA gates."""

    def conv_block(cin: int, cout: int) -> int:  # (conv3x3 + bias, BN) x 2
        return (9 * cin * cout + cout + 2 * cout) + (9 * cout * cout + cout + 2 * cout)

    widths = [f, 2 * f, 4 * f, 8 * f, 16 * f]
    total, previous = 0, in_channels
    for width in widths:  # encoder blocks 0..4
        total += conv_block(previous, width)
        previous = width
    total += 2  # centre SDA: alpha, beta
    total += conv_block(16 * f, 32 * f)
    total += 4 * (32 * f + 1)  # RMP: four 1x1 convolutions to one channel
    previous = 32 * f + 4
    for width in reversed(widths):  # decoder blocks 4..0
        total += 4 * previous * width + width  # Conv2DTranspose 2x2
        total += 2  # SDA on the skip
        total += 2 * (3 * width)  # BN on [sda, skip, up]
        total += conv_block(3 * width, width)
        previous = width
    total += f * num_classes + num_classes  # main 1x1
    total += sum(w * num_classes + num_classes for w in widths[1:])  # side outputs 1..4
    total += 5 * num_classes * (8 + 8)  # per scale and class: Conv2D(8, 1x1) on one channel
    return total


def test_parameter_count_equals_the_official_structure() -> None:
    """methods.md §3.14: official-equivalent about 34.3 M (4 classes, BN as 2 per channel)."""
    assert _keras_count(4) == 34_271_140
    assert count_parameters(RetiFluidNet(1, 4)) == 34_271_140
    assert abs(34_271_140 - 34.3e6) / 34.3e6 < 0.001
    assert count_parameters(RetiFluidNet(1, 2)) == _keras_count(2) == 34_268_986


def test_sda_gates_are_two_scalars_initialised_to_one() -> None:
    sda = SelfAdaptiveDualAttention()
    assert [(n, tuple(p.shape), p.tolist()) for n, p in sda.named_parameters()] == [
        ("alpha", (1,), [1.0]),
        ("beta", (1,), [1.0]),
    ]


def test_sda_matches_the_formula_by_hand() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 12)
    sda = SelfAdaptiveDualAttention(pool=4)
    with torch.no_grad():
        sda.alpha.fill_(0.7)
        sda.beta.fill_(1.3)
        got = sda(x)
    expected = torch.empty_like(x)
    for b in range(2):
        t = F.max_pool2d(x[b : b + 1], 4)[0].reshape(3, -1).T  # [N = 2 x 3, C = 3]
        n, c = t.shape
        pixel = torch.softmax(t @ t.T / math.sqrt(n), dim=1) @ t
        channel = t @ torch.softmax(t.T @ t / c, dim=1)
        fused = 0.5 * (torch.relu(0.7 * pixel) + torch.relu(1.3 * channel))
        fused = fused.T.reshape(3, 2, 3)
        # Each pooled cell covers a 4 x 4 block of the input.
        expected[b] = x[b] + fused.repeat_interleave(4, 1).repeat_interleave(4, 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_sda_refuses_maps_smaller_than_its_pooling() -> None:
    with pytest.raises(ValueError, match="min_hw"):
        SelfAdaptiveDualAttention(pool=4)(torch.zeros(1, 2, 3, 8))


def test_rmp_block_adds_one_pooled_channel_per_kernel() -> None:
    torch.manual_seed(1)
    rmp = ResidualMultiKernelPooling(5)
    x = torch.randn(1, 5, 12, 12)
    out = rmp(x)
    assert out.shape == (1, 9, 12, 12)
    torch.testing.assert_close(out[:, :5], x)
    # Kernel 6 on 12 x 12: 2 x 2 cells, each map constant over its 6 x 6 block.
    k6 = out[0, 8]
    assert torch.equal(k6[:6, :6], k6[0, 0].expand(6, 6))
    expected = F.relu(rmp.convs[3](F.max_pool2d(x, 6)))[0, 0]
    torch.testing.assert_close(k6[::6, ::6], expected)
    with pytest.raises(ValueError, match="at least 6"):
        rmp(torch.zeros(1, 5, 5, 12))


def test_outputs_heads_and_scales() -> None:
    torch.manual_seed(2)
    net = RetiFluidNet(1, 3).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 192, 224))
    assert out.logits.shape == (2, 3, 192, 224)
    sides, conn = out.aux["deep_supervision"], out.aux["connectivity"]
    assert [tuple(s.shape) for s in sides] == [(2, 3, 192, 224)] * 4
    assert [tuple(c.shape) for c in conn] == [(2, 3, 8, 192, 224)] * 5
    # Side output s (decoder s, at 1/2^s) is constant over 2^s x 2^s blocks.
    for s, side in enumerate(sides, start=1):
        block = 2**s
        coarse = side[..., ::block, ::block]
        torch.testing.assert_close(
            side, coarse.repeat_interleave(block, -2).repeat_interleave(block, -1)
        )
    # Scale 0 reads the main logits: channel (k, j) = w[8k + j] * logits_k + b[8k + j].
    head = net.connectivity_heads[0].conv
    w, b = head.weight.view(3, 8), head.bias.view(3, 8)
    expected = out.logits[:, :, None] * w[None, :, :, None, None] + b[None, :, :, None, None]
    torch.testing.assert_close(conn[0], expected)
    # Scales 1..4 read the softmax of their side output.
    head = net.connectivity_heads[2].conv
    w, b = head.weight.view(3, 8), head.bias.view(3, 8)
    expected = sides[1].softmax(1)[:, :, None] * w[None, :, :, None, None]
    torch.testing.assert_close(conn[2], expected + b[None, :, :, None, None])


def test_layers_are_built_once_and_every_parameter_trains() -> None:
    """The seed built conv/BN layers inside ``forward``: outputs changed between calls and the
    optimiser never saw them. Here the state dict is fixed, eval calls agree, and one step of
    the full objective reaches every parameter."""
    torch.manual_seed(3)
    net = PadToDivisor(RetiFluidNet(1, 2))
    keys = list(net.state_dict())
    x = torch.randn(1, 1, 100, 120)
    net.eval()
    with torch.no_grad():
        first, second = net(x).logits, net(x).logits
    assert torch.equal(first, second)
    assert list(net.state_dict()) == keys
    net.train()
    mask = (torch.rand(1, 100, 120) > 0.8).long()
    mask[:, :, :10] = 255
    losses = _objective()(net(x), {"mask": mask})
    losses["loss"].backward()
    losses = {k: v.detach() for k, v in losses.items()}
    assert params_without_grad(net) == []
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert set(losses) == {"loss", "dice", "connectivity"}
    assert float(losses["loss"]) == pytest.approx(
        float(losses["dice"]) + 0.05 * float(losses["connectivity"]), rel=1e-6
    )


def test_odd_small_size_batch_3() -> None:
    torch.manual_seed(4)
    out = check_odd_size(RetiFluidNet(1, 4), 3, 97, 131, num_classes=4)
    assert [tuple(c.shape) for c in out.aux["connectivity"]] == [(3, 4, 8, 97, 131)] * 5
    assert [tuple(s.shape) for s in out.aux["deep_supervision"]] == [(3, 4, 97, 131)] * 4


@pytest.mark.slow
def test_odd_duke_size_batch_1() -> None:
    torch.manual_seed(5)
    check_odd_size(RetiFluidNet(1, 2), 1, 496, 523, num_classes=2)


@pytest.mark.slow
def test_overfits_a_tiny_batch_with_its_own_loss() -> None:
    torch.manual_seed(6)
    net = PadToDivisor(RetiFluidNet(1, 2))
    batch = banded_batch(
        2, 48, 40, shifts=(0, 1), noise=0.1, generator=torch.Generator().manual_seed(1)
    )
    history = fit_steps(net, _objective(), batch, steps=25, lr=1e-3)
    first, last = history[0]["loss"], min(h["loss"] for h in history[-5:])
    assert last < 0.6 * first, f"loss {first:.3f} -> {last:.3f}"


# ---------------------------------------------------------------- train.py
def _fast_dev_run(make_cfg, *overrides: str) -> tuple[dict[str, float], Path]:
    cfg = make_cfg("debug=fdr", *overrides, fast=False)
    metrics = train(cfg)
    return metrics, Path(cfg.paths.output_dir)


def test_experiment_configs_compose(make_cfg) -> None:
    cfg = make_cfg("experiment=retifluidnet_duke", "paths.data_dir=/nonexistent", fast=False)
    assert cfg.dataset.name == "duke_fluid" and cfg.model.net.num_classes == 2
    assert cfg.loss.weights == {"dice": 1.0, "connectivity": 0.05}
    assert list(cfg.loss.terms.dice.weights) == WEIGHTS
    assert cfg.optimizer._target_ == "torch.optim.RMSprop" and cfg.optimizer.lr == 2e-4
    assert cfg.scheduler.factory.step_size == 5 and cfg.scheduler.factory.gamma == 0.8
    assert cfg.dataset.datamodule.train_repeats == 13 and cfg.trainer.max_epochs == 10
    assert cfg.augmentation.affine_p == 0.77 and cfg.augmentation.rotate == 3.0
    plain = make_cfg("experiment=retifluidnet_duke", "augmentation=none", fast=False, subdir="a")
    assert plain.augmentation is None
    retouch = make_cfg("experiment=retifluidnet_retouch", "paths.data_dir=/nonexistent",
                       fast=False, subdir="retouch")  # fmt: skip
    assert retouch.dataset.name == "retouch" and retouch.model.net.num_classes == 4
    assert retouch.experiment_name == "retifluidnet_retouch"
    assert retouch.optimizer.lr == 2e-4 and retouch.loss == cfg.loss


@pytest.mark.slow
def test_fast_dev_run_on_synthetic(make_cfg) -> None:
    metrics, run = _fast_dev_run(
        make_cfg, "model=retifluidnet", "loss=retifluidnet", "dataset=synthetic_small",
        "augmentation=none", "logger=csv", "~callbacks.rich_progress_bar",
        "~callbacks.model_summary",
    )  # fmt: skip
    assert math.isfinite(metrics["train/loss"])
    report = json.loads((run / "metrics.json").read_text())
    assert "dice" in report["dataset"]


@pytest.mark.slow
@requires_duke()
def test_fast_dev_run_on_duke_fluid(make_cfg) -> None:
    metrics, run = _fast_dev_run(
        make_cfg, "experiment=retifluidnet_duke", "paths.data_dir=../shared/datasets",
        "dataset.datamodule.batch_size=1", "dataset.datamodule.train_repeats=1", "logger=csv",
        "~callbacks.rich_progress_bar", "~callbacks.model_summary",
    )  # fmt: skip
    assert math.isfinite(metrics["train/loss"])
    report = json.loads((run / "metrics.json").read_text())
    assert "dice/fluid" in report["dataset"]
    assert not any(k.startswith("mad_um") for k in report["dataset"])  # no layers: skipped
