"""scripts/leaderboard_duke_cpu.sh and its budget (conf/experiment/leaderboard_duke_cpu.yaml):
every method is on the board (or excluded for a stated reason) and every entry composes into a
time-budgeted run without validation."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import hydra
import pytest

from octseg.utils.instantiators import instantiate_callbacks
from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "leaderboard_duke_cpu.sh"
# Models the script leaves out, each named with its reason in the script's header.
EXCLUDED = {"islam", "retifluidnet", "fanogan"}


@functools.cache
def _entries() -> dict[str, list[str]]:
    """The script's methods with the overrides it gives each (read by bash itself)."""
    program = (
        f"source <(sed -n '/^ALL_METHODS=/,/^METHODS=/p;/^overrides_of()/,/^}}/p' {SCRIPT}); "
        'for e in $ALL_METHODS; do echo "${e%%:*} $(overrides_of "$e" | tr "\\n" " ")"; done'
    )
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line}


def test_every_method_is_on_the_board_or_excluded_with_a_reason() -> None:
    entries = _entries()
    models = {p.stem for p in (REPO_ROOT / "conf" / "model").glob("*.yaml")}
    assert set(entries) | EXCLUDED == models
    assert not set(entries) & EXCLUDED
    header = SCRIPT.read_text().split("set -euo pipefail")[0]
    for name in EXCLUDED:
        assert f"{name} (" in header, f"the script must say why {name} is not on the board"
    # A method's own loss where it has one (conf/loss/<model>.yaml).
    own_losses = {p.stem for p in (REPO_ROOT / "conf" / "loss").glob("*.yaml")}
    for model, overrides in entries.items():
        if model in own_losses and model != "sd_layernet":  # SD-LayerNet binds its objectives
            assert f"loss={model}" in overrides, model


@pytest.mark.parametrize("model", sorted(_entries()))
def test_each_entry_composes_into_a_time_budgeted_run(make_cfg, model: str) -> None:
    overrides = _entries()[model]
    cfg = make_cfg(
        "experiment=leaderboard_duke_cpu", f"model={model}", "trainer.max_time=00:00:01:30",
        *overrides, fast=False,
    )
    assert cfg.dataset.name == "duke" and cfg.experiment_name == model  # one row per model
    callbacks = instantiate_callbacks(cfg.callbacks)
    names = {type(c).__name__ for c in callbacks}
    assert "EarlyStopping" not in names  # no validation: nothing to stop on
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert trainer.max_epochs == -1 and trainer.limit_val_batches == 0
    timer = next(c for c in trainer.callbacks if type(c).__name__ == "Timer")
    assert timer._duration == 90.0  # the budget, in seconds
    assert not any(
        type(c).__name__ == "ModelCheckpoint" and c.monitor for c in trainer.callbacks
    )  # the final weights are tested


def test_script_refuses_a_missing_dataset(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path), "OUT": str(tmp_path / "out")},
    )
    assert proc.returncode == 2 and f"DATA_DIR={tmp_path}" in proc.stderr
