"""The named weight-initialisation schemes: the layers each one touches and its distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from octseg.models.blocks.init import INIT_SCHEMES, init_weights


def _net() -> nn.Sequential:
    """One layer of every kind a scheme may touch, wide enough for distribution checks."""
    return nn.Sequential(
        nn.Conv2d(64, 128, 3),
        nn.BatchNorm2d(128),
        nn.ConvTranspose2d(128, 32, 4),
        nn.Linear(256, 512),
        nn.LayerNorm(512),
        nn.Conv1d(8, 8, 1),  # no scheme touches it
    )


def _perturbed(net: nn.Module) -> nn.Module:
    """Every parameter set to 7, so untouched and zeroed parameters can be told apart."""
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(7.0)
    return net


def _untouched(net: nn.Module, *indices: int) -> bool:
    return all(bool((p == 7.0).all()) for i in indices for p in net[i].parameters())


def test_he_normal_fan_out_uses_the_output_fan_and_keeps_conv_biases() -> None:
    torch.manual_seed(0)
    net = init_weights(_perturbed(_net()), "he_normal_fan_out")
    conv, bn, up = net[0], net[1], net[2]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 128)), rel=0.05)
    assert up.weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 32)), rel=0.05)
    assert bool((conv.bias == 7.0).all()) and bool((up.bias == 7.0).all())
    assert bool((bn.weight == 1).all()) and bool((bn.bias == 0).all())
    assert _untouched(net, 3, 4, 5)


def test_kaiming_normal_fan_in_zeroes_biases_and_draws_bn_weights_near_one() -> None:
    torch.manual_seed(0)
    net = init_weights(_perturbed(_net()), "kaiming_normal_fan_in")
    conv, bn = net[0], net[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.05)
    assert not conv.bias.any() and not net[2].bias.any() and not bn.bias.any()
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert 0.01 < bn.weight.std().item() < 0.03
    assert _untouched(net, 3, 4, 5)


def test_he_uniform_is_bounded_by_the_keras_limit() -> None:
    torch.manual_seed(0)
    net = init_weights(_perturbed(_net()), "he_uniform")
    bound = math.sqrt(6 / (9 * 64))
    weight = net[0].weight
    assert weight.abs().max().item() <= bound and weight.abs().max().item() > 0.95 * bound
    assert not net[0].bias.any() and not net[2].bias.any()
    assert _untouched(net, 1, 3, 4, 5)


def test_vit_trunc_normal_touches_only_linear_and_layer_norm() -> None:
    torch.manual_seed(0)
    net = init_weights(_perturbed(_net()), "vit_trunc_normal")
    linear, norm = net[3], net[4]
    assert linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert not linear.bias.any()
    assert bool((norm.weight == 1).all()) and not norm.bias.any()
    assert _untouched(net, 0, 1, 2, 5)


def test_same_seed_same_weights_for_every_scheme() -> None:
    for scheme in INIT_SCHEMES:
        torch.manual_seed(3)
        a = init_weights(_net(), scheme)
        torch.manual_seed(3)
        b = init_weights(_net(), scheme)
        for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
            assert torch.equal(pa, pb), (scheme, name)


def test_unknown_scheme_raises() -> None:
    with pytest.raises(ValueError, match="init_weights scheme must be one of"):
        init_weights(nn.Linear(2, 2), "xavier")
