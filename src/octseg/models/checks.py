"""Checks that a network fits a dataset, run before any training time is spent."""

from __future__ import annotations

import torch
from torch import nn

from octseg.models.base import as_seg_output
from octseg.models.wrappers import PadToDivisor

__all__ = ["check_model_dataset"]


def check_model_dataset(
    net: nn.Module, in_channels: int, num_classes: int, model_name: str = "model"
) -> None:
    """Runs one tiny forward pass to verify that the network takes the dataset's channels and
    predicts the dataset's classes, before any training time is spent.

    Raises:
        ValueError: naming both settings when they disagree.
    """
    wrapped = net if isinstance(net, PadToDivisor) else PadToDivisor(net)
    side = max(64, *wrapped.size_divisor)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = as_seg_output(wrapped(torch.zeros(1, in_channels, side, side)))
    except RuntimeError as err:
        if "channels" in str(err) or "size mismatch" in str(err) or "shape" in str(err):
            raise ValueError(
                f"{model_name} does not accept dataset.in_channels={in_channels} input channels "
                f"({err}). Set model.net.in_channels=${{dataset.in_channels}} or pick a matching "
                "dataset."
            ) from err
        raise
    finally:
        net.train(was_training)
    if out.logits.shape[1] != num_classes:
        raise ValueError(
            f"{model_name} predicts {out.logits.shape[1]} classes but dataset.num_classes="
            f"{num_classes}. Set model.net.num_classes=${{dataset.num_classes}} (the default) or "
            "use a dataset with that many classes."
        )
