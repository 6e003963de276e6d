"""Checkpoint I/O: writes that never leave a truncated checkpoint behind, and reads of local
weight files given in a setting (pretrained backbones, frozen loss networks)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from octseg.utils.io import atomic_write_bytes

__all__ = ["AtomicCheckpointIO", "load_state_dict_strict", "read_weights_file"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Serialises to memory, writes a temporary file beside the target, then renames it.

    Lightning's default writes the final path directly, so a kill during the write (Ctrl-C,
    OOM, pre-emption) can corrupt ``last.ckpt``, the file a resume depends on.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def read_weights_file(path: str | os.PathLike, setting: str, hint: str) -> Any:
    """Loads a local weights file (tensors and plain containers only) onto the CPU.

    Args:
        path: the file given in the configuration.
        setting: the configuration key that holds ``path`` (quoted in the error).
        hint: what to do instead, appended to the error (e.g. which file to give).

    Raises:
        FileNotFoundError: naming ``setting`` if ``path`` is not a file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{setting}={path} does not exist; {hint}")
    # weights_only: a weights file needs no pickled code, and must not run any.
    return torch.load(path, map_location="cpu", weights_only=True)


def load_state_dict_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    setting: str,
    path: str | os.PathLike,
    expected: str,
) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error that names the setting.

    Args:
        module: the module to fill in place.
        state: the (already filtered) state dict read from ``path``.
        setting: the configuration key that holds ``path``.
        path: the file ``state`` came from.
        expected: what the file should hold (e.g. ``"VGG-16 weights up to relu4_3"``).

    Raises:
        ValueError: if keys or shapes do not fit ``module``, with PyTorch's list of them.
    """
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{setting}={path} does not hold {expected}: {err}") from err
