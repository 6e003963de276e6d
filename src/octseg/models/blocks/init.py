"""Named weight-initialisation schemes of the reimplemented methods, applied in one place.

Each method's official code initialises its layers with a loop over the modules; the loop is
shared here and only the per-layer rule differs. A scheme touches only the layer types listed
below and leaves every other parameter at PyTorch's default:

* ``"he_normal_fan_out"`` — 2-D (transposed) convolutions ``N(0, 2 / (k_h k_w C_out))``, conv
  biases untouched; ``BatchNorm2d`` to ``(1, 0)`` (the classic ResNet loop; LightReSeg).
* ``"kaiming_normal_fan_in"`` — 2-D (transposed) convolutions Kaiming-normal (fan-in, ReLU
  gain), biases 0; ``BatchNorm2d`` weights ``N(1, 0.02)``, biases 0 (MGU-Net).
* ``"he_uniform"`` — 2-D (transposed) convolutions Keras ``he_uniform`` (uniform with bound
  ``sqrt(6 / fan_in)``), biases 0 (FourierNet's Keras U-Net).
* ``"vit_trunc_normal"`` — ``Linear`` weights truncated normal with std 0.02, biases 0;
  ``LayerNorm`` to ``(1, 0)`` (ViT/timm transformers; LightReSeg).

The modules are visited in :meth:`~torch.nn.Module.modules` order, so a seeded construction
draws the same numbers whichever module calls :func:`init_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

__all__ = ["INIT_SCHEMES", "init_weights"]

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _unit_affine(norm: nn.Module) -> None:
    """Normalisation layer to the identity affine map: weight 1, bias 0."""
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)


def _zero_bias(layer: nn.Module) -> None:
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _he_normal_fan_out(m: nn.Module) -> None:
    if isinstance(m, _CONVS):
        # k_h k_w C_out, also for transposed convolutions (whose PyTorch fan-out differs).
        n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
    elif isinstance(m, nn.BatchNorm2d):
        _unit_affine(m)


def _kaiming_normal_fan_in(m: nn.Module) -> None:
    if isinstance(m, _CONVS):
        nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in")
        _zero_bias(m)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _he_uniform(m: nn.Module) -> None:
    if isinstance(m, _CONVS):
        nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
        _zero_bias(m)


def _vit_trunc_normal(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        _zero_bias(m)
    elif isinstance(m, nn.LayerNorm):
        _unit_affine(m)


_RULES: dict[str, Callable[[nn.Module], None]] = {
    "he_normal_fan_out": _he_normal_fan_out,
    "kaiming_normal_fan_in": _kaiming_normal_fan_in,
    "he_uniform": _he_uniform,
    "vit_trunc_normal": _vit_trunc_normal,
}
INIT_SCHEMES = tuple(_RULES)


def init_weights(module: nn.Module, scheme: str) -> nn.Module:
    """Initialises ``module`` and all its submodules in place with a named scheme.

    Args:
        module: the module whose layers are re-initialised (itself included).
        scheme: one of :data:`INIT_SCHEMES` (see the module docstring).

    Returns:
        ``module``, for chaining.

    Raises:
        ValueError: for an unknown ``scheme``.
    """
    rule = _RULES.get(scheme)
    if rule is None:
        raise ValueError(f"init_weights scheme must be one of {INIT_SCHEMES}, got {scheme!r}.")
    for m in module.modules():
        rule(m)
    return module
