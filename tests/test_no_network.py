"""No network at import or run time: the README commands run with outbound sockets refused.

Subprocesses start with ``tests/netguard`` first on ``PYTHONPATH``; its ``sitecustomize``
refuses and records every attempt to resolve a host name or connect beyond loopback and Unix
sockets (see its docstring). A run passes only if every process was armed and nothing was
attempted. The first tests show that the guard catches what it must and lets loopback through,
and that albumentations would phone home without the switch that ``import octseg`` sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import FAST_OVERRIDES, REPO_ROOT

GUARD_DIR = Path(__file__).resolve().parent / "netguard"
# Switches whose defaults are under test: the subprocesses must not inherit them.
SWITCHES = ("NO_ALBUMENTATIONS_UPDATE", "WANDB_MODE")


def _run_guarded(
    args: list[str], cwd: Path, log: Path, timeout: int = 600, **env_vars: str
) -> subprocess.CompletedProcess:
    """Runs ``python <args>`` in ``cwd`` under the guard, recording into ``log``."""
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    paths = [str(GUARD_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        OCTSEG_NETGUARD_LOG=str(log),
        OCTSEG_LOG_DIR=str(cwd / "logs"),
        **env_vars,
    )
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _attempts(log: Path) -> list[dict[str, Any]]:
    return [e for e in _events(log) if e["event"] != "armed"]


def _describe(attempts: list[dict[str, Any]]) -> str:
    return "\n".join(f"{e['event']} {e['target']} from {e['stack'][-3:]}" for e in attempts)


_PROBE = """
import errno, socket
refused = 0
try:
    socket.create_connection(("198.51.100.7", 80), timeout=1)  # TEST-NET-2, never routed
except ConnectionRefusedError:
    refused += 1
try:
    socket.getaddrinfo("pypi.org", 443)
except socket.gaierror:
    refused += 1
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
refused += s.connect_ex(("203.0.113.5", 53)) == errno.ECONNREFUSED  # TEST-NET-3
s.close()
# Loopback and Unix sockets still work.
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname(), timeout=5)
client.close(), server.close()
assert socket.getaddrinfo("localhost", 80)
a, b = socket.socketpair()
a.sendall(b"x"); assert b.recv(1) == b"x"
print(refused)
"""


def test_the_guard_refuses_and_records_public_targets_only(tmp_path: Path) -> None:
    log = tmp_path / "net.jsonl"
    proc = _run_guarded(["-c", _PROBE], tmp_path, log)
    assert proc.stdout.strip() == "3"
    attempts = _attempts(log)
    assert [(e["event"], e["target"]) for e in attempts] == [
        ("create_connection", ["198.51.100.7", 80]),
        ("getaddrinfo", "pypi.org"),
        ("connect_ex", ["203.0.113.5", 53]),
    ]


def test_albumentations_phones_home_unless_octseg_is_imported_first(tmp_path: Path) -> None:
    bare, after_octseg = tmp_path / "bare.jsonl", tmp_path / "octseg.jsonl"
    _run_guarded(["-c", "import albumentations"], tmp_path, bare)
    targets = {str(e["target"]) for e in _attempts(bare)}
    assert any("pypi.org" in t for t in targets), _describe(_attempts(bare))

    _run_guarded(["-c", "import octseg, albumentations"], tmp_path, after_octseg)
    assert [e["event"] for e in _events(after_octseg)] == ["armed"]


def _armed_scripts(log: Path) -> set[str]:
    return {Path(e["argv"][0]).name for e in _events(log) if e["event"] == "armed" and e["argv"]}


@pytest.mark.slow
def test_readme_commands_attempt_no_network(tmp_path: Path) -> None:
    log = tmp_path / "net.jsonl"
    train, evaluate = str(REPO_ROOT / "train.py"), str(REPO_ROOT / "eval.py")
    # python train.py debug=fdr (tiny; Lightning writes no checkpoint in a fast dev run).
    _run_guarded([train, "debug=fdr", *FAST_OVERRIDES], tmp_path, log)
    # The default logger (W&B offline + CSV), as `make train` runs it, a few batches long; then
    # eval.py on the checkpoint that run wrote.
    wandb_dir = tmp_path / "wandb_run"
    wandb_run = [o for o in FAST_OVERRIDES if not o.startswith("logger=")] + [
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
    ]
    wandb_dir.mkdir()
    _run_guarded([train, *wandb_run], wandb_dir, log)
    assert list((wandb_dir / "logs").rglob("offline-run-*")), "the W&B logger did not run"
    ckpts = sorted((wandb_dir / "logs").rglob("best.ckpt"))
    assert ckpts, f"train.py wrote no checkpoint under {wandb_dir / 'logs'}"
    _run_guarded([evaluate, f"ckpt_path={ckpts[-1]}"], tmp_path, log)
    # predict.py on a small volume with the same checkpoint (matplotlib draws its maps).
    scans = tmp_path / "scans"
    scans.mkdir()
    np.save(scans / "volume.npy", np.full((2, 32, 24), 40, np.uint8))
    _run_guarded([str(REPO_ROOT / "predict.py"), f"ckpt_path={ckpts[-1]}", f"input={scans}",
                  "spacing_um=[3.87,11.3,100]"], tmp_path, log)  # fmt: skip

    assert {"train.py", "eval.py", "predict.py"} <= _armed_scripts(log), _events(log)
    attempts = _attempts(log)
    assert not attempts, f"network access was attempted:\n{_describe(attempts)}"
