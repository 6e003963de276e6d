"""Streaming a release into the prepared layout holds one volume at a time."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np

from octseg.data.base import BScanRecord
from octseg.data.prepared import PreparedWriter


def test_write_volumes_frees_a_volume_before_reading_the_next(tmp_path: Path) -> None:
    writer = PreparedWriter(tmp_path / "out", "fixture", {}, num_classes=2)
    alive: list[weakref.ref] = []
    held_while_reading: list[bool] = []

    def read(volume_id: str) -> tuple[list[BScanRecord], dict]:
        held_while_reading.append(any(ref() is not None for ref in alive))
        image = np.zeros((8, 6), np.uint8)
        alive.append(weakref.ref(image))
        record = BScanRecord(image, np.ones((8, 6), np.uint8), f"{volume_id}_0", volume_id, 0)
        return [record], {}

    writer.write_volumes(["v1", "v2", "v3"], read)
    assert held_while_reading == [False, False, False]
    assert writer.finish().volumes == 3
