"""Wasserstein GAN losses with gradient penalty (WGAN-GP), as f-AnoGAN trains its GAN.

Gulrajani I., Ahmed F., Arjovsky M., Dumoulin V., Courville A., "Improved Training of
Wasserstein GANs", NeurIPS 2017, arXiv:1704.00028. For a critic ``D``, real samples ``x`` and
generated samples ``x~``::

    L_D = mean D(x~) - mean D(x) + lambda * mean_i (||grad D(x^_i)||_2 - 1)^2,
          x^_i = x_i + a_i (x~_i - x_i),  a_i ~ U[0, 1]
    L_G = -mean D(x~)

These are plain functions rather than :class:`~octseg.losses.objective.Objective` terms: the
GAN is trained with manual optimisation (:mod:`octseg.modules.fanogan`), two losses for two
optimizers, not one weighted objective of a segmentation output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["critic_loss", "generator_loss", "gradient_penalty"]

Critic = Callable[[torch.Tensor], torch.Tensor]


def gradient_penalty(
    critic: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mean_i (||grad_x D(x^_i)||_2 - 1)^2`` at random interpolates of real and fake samples.

    The graph is kept (``create_graph=True``), so the penalty trains the critic.

    Args:
        critic: ``[N, ...] -> [N]`` scores.
        real: real samples ``[N, ...]``.
        fake: generated samples, same shape (detached from the generator by the caller).
        alpha: interpolation weights ``[N]`` in ``[0, 1]`` (default: uniform random).

    Returns:
        The scalar penalty (unweighted).
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape."
        )
    n = real.shape[0]
    if alpha is None:
        alpha = torch.rand(n, device=real.device, dtype=real.dtype)
    alpha = alpha.view(n, *([1] * (real.dim() - 1)))
    mixed = (real + alpha * (fake - real)).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    slopes = grad.flatten(1).square().sum(1).sqrt()
    return (slopes - 1).square().mean()


def critic_loss(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, lambda_gp: float = 10.0
) -> dict[str, torch.Tensor]:
    """WGAN-GP critic loss: ``{"loss", "wasserstein", "gradient_penalty"}`` where
    ``wasserstein = mean D(x) - mean D(x~)`` (the critic's estimate of the distance)."""
    fake = fake.detach()
    distance = critic(real).mean() - critic(fake).mean()
    penalty = gradient_penalty(critic, real, fake)
    return {
        "loss": -distance + lambda_gp * penalty,
        "wasserstein": distance.detach(),
        "gradient_penalty": penalty.detach(),
    }


def generator_loss(critic: Critic, fake: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss ``-mean D(x~)``."""
    return -critic(fake).mean()
