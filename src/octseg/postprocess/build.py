"""Post-processing of predicted label maps by name: ``postprocess=<name>`` in ``eval.py``,
``predict.py`` and the test step of ``train.py``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from octseg.postprocess.topology import enforce_layer_order

__all__ = ["POSTPROCESS_NAMES", "build_postprocess"]

#: Valid values of the ``postprocess`` setting (None and "none" switch it off).
POSTPROCESS_NAMES = ("none", "topology")


def build_postprocess(
    name: str | None, anatomy: Mapping[str, Any]
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The post-processing called ``name`` for a dataset's anatomy.

    Args:
        name: None or ``"none"`` (no post-processing), or ``"topology"``
            (:func:`~octseg.postprocess.topology.enforce_layer_order`: layers ordered top to
            bottom in every column, fluid kept inside the retina).
        anatomy: the dataset's ``anatomy`` (``ordered_labels``, ``fluid_labels``,
            ``layer_labels``).

    Returns:
        None, or a function mapping integer label maps ``[H, W]`` or ``[B, H, W]`` to label maps
        of the same shape and dtype.

    Raises:
        ValueError: for an unknown name, or ``topology`` with an anatomy that orders fewer than
            two regions.
    """
    key = "none" if name is None else str(name).strip().lower()
    if key not in POSTPROCESS_NAMES:
        raise ValueError(
            f"postprocess={name!r} is not a post-processing; valid values: null, "
            f"{', '.join(POSTPROCESS_NAMES)}."
        )
    if key == "none":
        return None
    anatomy = anatomy or {}
    ordered = [int(v) for v in anatomy.get("ordered_labels") or []]
    if len(ordered) < 2:
        raise ValueError(
            f"postprocess={name} orders the layers top to bottom and needs the dataset's "
            f"anatomy.ordered_labels (at least two regions, top to bottom), got {ordered}: "
            "use a dataset whose anatomy orders layers (eval.py pred_dir=...: add "
            "dataset=<name>), or drop postprocess."
        )
    layers = [int(v) for v in anatomy.get("layer_labels") or []]
    return functools.partial(
        enforce_layer_order,
        ordered_labels=ordered,
        fluid_labels=[int(v) for v in anatomy.get("fluid_labels") or []],
        retina_labels=layers or None,
    )
