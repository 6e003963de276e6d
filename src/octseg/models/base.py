"""The output contract every OCTSeg network follows.

A network's ``forward`` returns either a raw-logit tensor ``[B, K, H, W]`` or a
:class:`SegOutput` when it has more to say (auxiliary heads, deep supervision, model-internal
regularisers). Never a softmax: losses and metrics apply it themselves.

Networks also declare their input policy as class attributes, read by
:class:`octseg.models.wrappers.PadToDivisor`:

* ``size_divisor`` (int, or ``(div_h, div_w)``): H and W must be multiples of it (1 = any size);
* ``requires_square`` (bool): H must equal W;
* ``min_hw`` (optional ``(H, W)``): the smallest input the network accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["SegOutput", "as_seg_output"]


@dataclass
class SegOutput:
    """What a network returns.

    Attributes:
        logits: raw class scores ``[B, K, H, W]`` at the input resolution.
        aux: named auxiliary predictions, e.g. ``"deep_supervision"`` (a list of lower-resolution
            logits, finest first), boundary maps, reconstructions.
        reg: named unweighted scalar regularisers computed inside the model.
    """

    logits: torch.Tensor
    aux: dict[str, object] = field(default_factory=dict)
    reg: dict[str, torch.Tensor] = field(default_factory=dict)


def as_seg_output(output: torch.Tensor | SegOutput) -> SegOutput:
    """Normalises a network's return value to :class:`SegOutput`.

    Raises:
        TypeError: if ``output`` is neither a tensor nor a ``SegOutput``.
    """
    if isinstance(output, SegOutput):
        return output
    if isinstance(output, torch.Tensor):
        return SegOutput(logits=output)
    raise TypeError(
        f"A network must return a logits tensor or a SegOutput, got {type(output).__name__}."
    )
