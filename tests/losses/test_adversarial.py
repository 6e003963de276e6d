"""WGAN-GP losses: the gradient penalty and the critic loss of a linear critic, by hand."""

from __future__ import annotations

import pytest
import torch

from octseg.losses.adversarial import critic_loss, generator_loss, gradient_penalty


def _linear_critic(w: torch.Tensor, b: float = 0.5):
    return lambda x: (x * w).flatten(1).sum(1) + b


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_penalty_of_a_linear_critic_is_the_squared_norm_gap(scale: float) -> None:
    """grad_x (w . x + b) = w everywhere, so the penalty is (||w|| - 1)^2 at any interpolate."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 3, 4, generator=g)
    w = w / w.norm() * scale
    real, fake = torch.randn(5, 1, 3, 4, generator=g), torch.randn(5, 1, 3, 4, generator=g)
    penalty = gradient_penalty(_linear_critic(w), real, fake)
    assert float(penalty) == pytest.approx((scale - 1) ** 2, rel=1e-5, abs=1e-9)


def test_penalty_interpolates_between_real_and_fake() -> None:
    """A quadratic critic D(x) = sum x^2 / 2 has gradient x: with alpha = 0 the penalty is
    measured at the real samples, with alpha = 1 at the fake ones."""
    critic = lambda x: x.square().flatten(1).sum(1) / 2  # noqa: E731
    real = torch.tensor([[3.0, 4.0]])  # norm 5
    fake = torch.tensor([[0.0, 2.0]])  # norm 2
    at_real = gradient_penalty(critic, real, fake, torch.zeros(1)).detach()
    at_fake = gradient_penalty(critic, real, fake, torch.ones(1)).detach()
    assert float(at_real) == pytest.approx(16.0) and float(at_fake) == pytest.approx(1.0)


def test_penalty_trains_the_critic() -> None:
    w = torch.full((1, 2), 2.0, requires_grad=True)  # ||w|| = 2 sqrt 2
    penalty = gradient_penalty(_linear_critic(w), torch.zeros(3, 2), torch.ones(3, 2))
    penalty.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    norm = 8**0.5
    expected = 2 * (norm - 1) * 2.0 / norm
    torch.testing.assert_close(w.grad, torch.full((1, 2), expected))


def test_critic_and_generator_losses_of_a_linear_critic() -> None:
    w = torch.tensor([[0.5, -1.0]])
    critic = _linear_critic(w, b=0.0)
    real = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # D = 0.5, -0.5
    fake = torch.tensor([[0.0, 1.0], [2.0, 0.0]])  # D = -1, 1
    out = critic_loss(critic, real, fake, lambda_gp=10.0)
    gap = (1.25**0.5 - 1) ** 2
    assert float(out["wasserstein"]) == pytest.approx(0.0 - 0.0)
    assert float(out["gradient_penalty"]) == pytest.approx(gap, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(10 * gap, rel=1e-5)
    assert float(generator_loss(critic, fake)) == pytest.approx(0.0)
    assert float(generator_loss(critic, real[:1])) == pytest.approx(-0.5)


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(lambda x: x.sum(1), torch.zeros(2, 3), torch.zeros(3, 3))
