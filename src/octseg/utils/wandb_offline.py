"""Reading an offline W&B run back without uploading it.

wandb keeps an offline run as one binary ``run-<id>.wandb`` log of protobuf records. Since wandb
0.2x ships no Python reader for it (the reader lives in its Go core), this small parser reads the
log format (LevelDB-style 32 KiB blocks of CRC-framed record fragments after a 7-byte header)
so that tests and users can check what a run logged (summary, history keys, config) offline.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["iter_records", "read_offline_run"]

_BLOCK = 32768
_HEADER = 7  # b":W&B" + 2-byte magic + 1-byte version
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_records(path: str | Path) -> Iterator[bytes]:
    """Yields the serialised protobuf records of a ``.wandb`` log.

    Raises:
        ValueError: if the file is not a W&B log.
    """
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run log (missing ':W&B' header).")
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        pos += 7
        chunk = data[pos : pos + length]
        pos += length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        else:  # zero padding up to the end of the block
            pos += (_BLOCK - pos % _BLOCK) % _BLOCK


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(path: str | Path) -> dict[str, Any]:
    """Summarises an offline run: ``{"summary": {...}, "history_keys": set, "config": {...}}``.

    ``summary`` holds the last logged value of every history key, updated by the run's summary
    records (what the W&B dashboard would show).

    Args:
        path: the ``run-<id>.wandb`` file, or the ``offline-run-*`` folder holding it.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        logs = sorted(path.glob("run-*.wandb"))
        if not logs:
            raise FileNotFoundError(f"No run-*.wandb log in {path}.")
        path = logs[0]
    summary: dict[str, Any] = {}
    last_logged: dict[str, Any] = {}
    config: dict[str, Any] = {}
    history_keys: set[str] = set()
    for raw in iter_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            for item in record.summary.update:
                summary[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                history_keys.add(_key(item))
                last_logged[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[_key(item)] = json.loads(item.value_json)
    return {"summary": {**last_logged, **summary}, "history_keys": history_keys, "config": config}
