"""Generic checks over every ``conf/model/*.yaml``: shapes through PadToDivisor, gradients,
overfitting one small batch."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from octseg.models.base import SegOutput, as_seg_output
from octseg.models.wrappers import PadToDivisor
from tests.models.model_checks import (
    banded_batch,
    check_odd_size,
    cross_entropy,
    fit_steps,
    params_without_grad,
)
from tests.models.model_configs_helper import build_net, model_config_names

NAMES = model_config_names()
# The paper methods run the full-size shape check and the overfit check in the fast suite; the
# library baselines run them at a smaller odd size / marked slow (2-core CPU budget).
FAST_FULL = {"unet", "relaynet", "ynet"}
FAST_OVERFIT = {"unet_small", "relaynet", "ynet"}
# Tens of millions of parameters: the backward check is slow on a shared 2-core CPU.
SLOW_BACKWARD = {"nnunet_style", "smp_unet", "smp_deeplabv3plus", "monai_swin_unetr"}
NEEDS = {"monai_swin_unetr": "einops"}
# Networks without normalisation layers need more Adam steps on the toy batch (FourierNet: the
# seed's plain Keras U-Net blocks, two cascaded U-Nets with dropout).
OVERFIT_STEPS = {"fouriernet": 60}
# Logits that are log-probabilities with a floor (log(p + eps)): compared as probabilities,
# since float32 rounding of a p near eps moves its log far more than any real logit.
LOG_PROB_LOGITS = {"sd_layernet"}


def _skip_if_missing(name: str) -> None:
    module = NEEDS.get(name)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{name} needs the optional package {module!r}")


def _all_outputs(out: SegOutput) -> list[torch.Tensor]:
    """The logits and every finite floating-point tensor of ``aux`` (lists included): heads
    trained only by their own loss term (e.g. RetiFluidNet's connectivity maps, SD-LayerNet's
    reconstruction) must get gradients too. Entries holding infinities carry no training signal
    (SD-LayerNet's curvature excess is -inf while its limits are not yet estimated: no limit)."""
    tensors = [out.logits]
    for value in out.aux.values():
        items = value if isinstance(value, (list, tuple)) else [value]
        tensors += [
            v
            for v in items
            if isinstance(v, torch.Tensor) and v.is_floating_point() and torch.isfinite(v).all()
        ]
    return tensors


def test_every_model_config_is_covered() -> None:
    expected = {"unet", "relaynet", "ynet", "ynet_noffc", "nnunet_style"}
    assert expected <= set(NAMES)


def _slow_unless(name: str, fast: set[str]) -> object:
    return name if name in fast else pytest.param(name, marks=pytest.mark.slow)


@pytest.mark.parametrize("name", [_slow_unless(n, FAST_FULL) for n in NAMES])
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_bscan_size(name: str, batch: int) -> None:
    """A Duke-sized odd B-scan (496 x 523) comes back at its own size."""
    _check_forward(name, batch, 496, 523)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_small_odd_size(name: str, batch: int) -> None:
    _check_forward(name, batch, 100, 147)


def _check_forward(name: str, batch: int, h: int, w: int) -> None:
    _skip_if_missing(name)
    torch.manual_seed(0)
    check_odd_size(build_net(name), batch, h, w, num_classes=10)


@pytest.mark.parametrize("name", [_slow_unless(n, set(NAMES) - SLOW_BACKWARD) for n in NAMES])
def test_backward_reaches_every_parameter(name: str) -> None:
    _skip_if_missing(name)
    torch.manual_seed(0)
    net = PadToDivisor(build_net(name)).train()
    x = torch.randn(2, 1, 60, 70)
    out = as_seg_output(net(x))
    loss = sum(o.float().square().mean() for o in _all_outputs(out))
    loss.backward()
    missing = params_without_grad(net)
    assert not missing, f"{name}: parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def _overfit(name: str, steps: int = 20) -> tuple[float, float]:
    torch.manual_seed(0)
    net = PadToDivisor(build_net(name))
    # Two B-scan-like images: horizontal bands whose label follows the intensity.
    g = torch.Generator().manual_seed(1)
    batch = banded_batch(10, 32, 40, shifts=(0, 3), noise=0.1, generator=g)
    history = fit_steps(net, cross_entropy, batch, steps, lr=2e-3)
    losses = [t["loss"] for t in history]
    return losses[0], min(losses[-5:])


@pytest.mark.parametrize("name", [_slow_unless(n, FAST_OVERFIT) for n in NAMES])
def test_overfits_one_batch(name: str) -> None:
    _skip_if_missing(name)
    first, last = _overfit(name, OVERFIT_STEPS.get(name, 20))
    assert last < 0.6 * first, f"{name}: loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_gives_the_same_logits(name: str) -> None:
    """``model.channels_last=true`` is a speed option only: same logits for every network."""
    _skip_if_missing(name)
    torch.manual_seed(0)
    net = PadToDivisor(build_net(name)).eval()
    x = torch.randn(2, 1, 100, 147)
    with torch.no_grad():
        expected = as_seg_output(net(x)).logits
        net = net.to(memory_format=torch.channels_last)
        got = as_seg_output(net(x.contiguous(memory_format=torch.channels_last))).logits
    # Different convolution kernels sum in a different order: allow float32 rounding relative to
    # the logits' scale (deep random-init nets such as ResNet-34 reach |logits| of tens).
    if name in LOG_PROB_LOGITS:
        expected, got = expected.softmax(dim=1), got.softmax(dim=1)
    scale = float(expected.abs().max().clamp_min(1.0))
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4 * scale)
