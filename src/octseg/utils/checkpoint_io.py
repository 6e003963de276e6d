"""Checkpoint I/O that never leaves a truncated checkpoint behind."""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from octseg.utils.io import atomic_write_bytes

__all__ = ["AtomicCheckpointIO"]


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
