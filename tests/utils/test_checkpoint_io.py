"""Checkpoint I/O: atomic writes, and reads of local weight files named by a setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from octseg.utils.checkpoint_io import (
    AtomicCheckpointIO,
    load_state_dict_strict,
    read_weights_file,
)


def test_atomic_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.arange(3.0)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_read_weights_file_loads_tensors_and_names_the_setting_when_missing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.pth"
    torch.save({"a.weight": torch.ones(2)}, path)
    assert torch.equal(read_weights_file(str(path), "x.path", "hint")["a.weight"], torch.ones(2))
    with pytest.raises(FileNotFoundError, match=r"model\.net\.foo=.*none\.pth does not exist; do"):
        read_weights_file(tmp_path / "none.pth", "model.net.foo", "do this.")


def test_read_weights_file_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), path)  # a whole pickled module, not a state dict
    with pytest.raises(Exception, match="[Ww]eights only"):
        read_weights_file(path, "x.path", "hint")


def test_load_state_dict_strict_fills_the_module_or_names_setting_and_expectation() -> None:
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    load_state_dict_strict(target, source.state_dict(), "x.path", "f.pth", "a linear layer")
    assert torch.equal(target.weight, source.weight)
    with pytest.raises(
        ValueError, match=r"(?s)x\.path=f\.pth does not hold a linear layer: .*size mismatch"
    ):
        load_state_dict_strict(
            nn.Linear(4, 2), source.state_dict(), "x.path", "f.pth", "a linear layer"
        )
    with pytest.raises(ValueError, match="Missing key"):
        load_state_dict_strict(target, {"weight": source.weight}, "x.path", "f.pth", "a linear")
