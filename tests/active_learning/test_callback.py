"""The active-learning loop through train.py: rounds, exact budgets, disjoint selections saved
per round, the learning curve, resume between rounds, and the setting errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch

from octseg.active_learning.callback import ActiveLearning
from octseg.active_learning.pool import unpack_masks
from octseg.training import train
from tests.conftest import SHARED_DIR, requires_duke

SUITE = {"_target_": "octseg.metrics.suite.MetricSuite", "families": ["overlap"],
         "num_classes": 3}  # fmt: skip
# Two tiny rounds on synthetic_small (8 pool scans of 128 x 128): Y-Net with dropout.
TINY = [
    "callbacks=active_learning",
    "model=ynet",
    "model.net.base_channels=8",
    "model.net.dropout=0.25",
    "metrics=fast",
    "callbacks.active_learning.epochs_per_round=1",
    "callbacks.active_learning.mc_steps=3",
    "callbacks.active_learning.mc_batch=3",
    "callbacks.active_learning.initial_fraction=0.1",
    "callbacks.active_learning.budget_images=0.5",
    "callbacks.active_learning.superpixel_size=256",
    "+trainer.limit_val_batches=1",
    "trainer.deterministic=true",
    "seed=3",
]
AREA = 128 * 128


def _curve(run: Path, acquisition: str = "edgeal") -> list[dict[str, str]]:
    with open(run / "active_learning" / f"learning_curve_{acquisition}.csv") as f:
        return list(csv.DictReader(f))


def _rounds(run: Path) -> list[dict[str, np.ndarray]]:
    files = sorted((run / "active_learning").glob("round_*_revealed.npz"))
    return [unpack_masks(f.read_bytes()) for f in files]


def _check_rounds(run: Path, rounds: int) -> None:
    """Round 0: one whole scan; then exactly the budget per round, no pixel twice; the union is
    the checkpoint's revealed state."""
    selections = _rounds(run)
    assert len(selections) == rounds + 1
    assert [sum(int(m.sum()) for m in s.values()) for s in selections] == [AREA] + [
        AREA // 2
    ] * rounds
    union: dict[str, np.ndarray] = {}
    for selection in selections:
        for cid, mask in selection.items():
            seen = union.setdefault(cid, np.zeros_like(mask))
            assert not (seen & mask).any(), f"{cid}: a pixel revealed twice"
            seen |= mask
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if "ActiveLearning" in k]
    assert state["round"] == rounds
    stored = unpack_masks(state["revealed"])
    for cid, mask in stored.items():
        np.testing.assert_array_equal(mask, union.get(cid, np.zeros_like(mask)))
    curve = _curve(run)
    assert [int(r["round"]) for r in curve] == list(range(rounds))
    labelled = [int(r["labelled_pixels"]) for r in curve]
    assert labelled == [AREA + k * AREA // 2 for k in range(rounds)]
    assert all(math.isfinite(float(r["dice"])) and math.isfinite(float(r["mad_um"]))
               for r in curve)  # fmt: skip
    for k in range(rounds):
        assert (run / "active_learning" / f"round_{k:02d}" / "metrics.json").is_file()


@pytest.mark.parametrize("acquisition", ["edgeal", "random"])
def test_train_py_runs_two_rounds(make_cfg, acquisition: str) -> None:
    cfg = make_cfg(*TINY, "trainer.max_epochs=2",
                   f"callbacks.active_learning.acquisition={acquisition}")  # fmt: skip
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    if acquisition == "edgeal":
        _check_rounds(run, rounds=2)
    assert len(_curve(run, acquisition)) == 2
    assert (run / "active_learning" / f"learning_curve_{acquisition}.png").stat().st_size > 0
    assert math.isfinite(metrics["test/dice"])
    assert (run / "metrics.json").is_file()


def test_a_fixed_epoch_length_trains_every_round_the_same_steps(make_cfg) -> None:
    # Round 0 has one labelled scan (one step per epoch without samples_per_epoch); with
    # samples_per_epoch=6 at batch 2, every round trains 3 steps.
    cfg = make_cfg(*TINY, "trainer.max_epochs=2", "test=false", "dataset.datamodule.batch_size=2",
                   "callbacks.active_learning.acquisition=random",
                   "callbacks.active_learning.samples_per_epoch=6")  # fmt: skip
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6
    assert [int(r["labelled_scans"]) for r in _curve(Path(cfg.paths.output_dir), "random")][0] == 1


@pytest.mark.slow
def test_resume_between_rounds_continues_as_the_uninterrupted_run(make_cfg) -> None:
    common = (*TINY, "test=false", "scheduler=none",
              "callbacks.active_learning.acquisition=entropy")  # fmt: skip
    whole = make_cfg(*common, "trainer.max_epochs=3", subdir="whole")
    train(whole)
    half = make_cfg(*common, "trainer.max_epochs=2", subdir="half")
    train(half)
    last = Path(half.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = make_cfg(*common, "trainer.max_epochs=3", f"ckpt_path={last}", subdir="half")
    train(resumed)
    a, b = Path(whole.paths.output_dir), Path(resumed.paths.output_dir)
    assert [r["labelled_pixels"] for r in _curve(a, "entropy")] == [
        r["labelled_pixels"] for r in _curve(b, "entropy")
    ]
    for x, y in zip(_rounds(a), _rounds(b), strict=True):  # the same selections, round by round
        assert x.keys() == y.keys()
        for cid in x:
            np.testing.assert_array_equal(x[cid], y[cid])


def test_state_is_restored_before_the_next_round(make_cfg) -> None:
    cfg = make_cfg(*TINY, "trainer.max_epochs=1", "test=false")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if "ActiveLearning" in k]
    callback = hydra.utils.instantiate(cfg.callbacks.active_learning)
    callback.load_state_dict(state)
    datamodule = hydra.utils.instantiate(cfg.dataset.datamodule)
    datamodule.setup("fit")
    trainer = SimpleNamespace(datamodule=datamodule, current_epoch=1)
    callback.on_fit_start(trainer, None)
    assert callback.round == 1 and len(callback.curve) == 1
    assert sum(int(r.sum()) for r in callback.revealed) == AREA + AREA // 2
    assert datamodule.datasets["train"] is callback.dataset
    assert len(callback.dataset) == len(callback.dataset.indices) >= 2


def test_setting_errors() -> None:
    with pytest.raises(ValueError, match="acquisition='bald'"):
        ActiveLearning(acquisition="bald", metrics=SUITE)
    with pytest.raises(ValueError, match="budget_images must be > 0"):
        ActiveLearning(budget_images=0, metrics=SUITE)
    with pytest.raises(ValueError, match="samples_per_epoch must be > 0"):
        ActiveLearning(samples_per_epoch=0, metrics=SUITE)
    with pytest.raises(ValueError, match="metrics is required"):
        ActiveLearning()
    callback = ActiveLearning(epochs_per_round=2, metrics=SUITE)
    with pytest.raises(ValueError, match="multiple of"):
        callback.setup(SimpleNamespace(max_epochs=3), None, "fit")
    trainer = SimpleNamespace(max_epochs=4, reload_dataloaders_every_n_epochs=0)
    callback.setup(trainer, None, "fit")
    assert trainer.reload_dataloaders_every_n_epochs == 1
    callback.setup(SimpleNamespace(max_epochs=1, fast_dev_run=True), None, "fit")  # debug=fdr
    with pytest.raises(ValueError, match="one process"):
        callback.setup(SimpleNamespace(max_epochs=4, world_size=2), None, "fit")


def test_mc_dropout_without_dropout_is_refused(make_cfg) -> None:
    module = hydra.utils.instantiate(make_cfg("model=unet_small").model)
    callback = ActiveLearning(acquisition="entropy", mc_steps=4, metrics=SUITE)
    with pytest.raises(ValueError, match="model.net.dropout=0.25"):
        callback._mc_probs(module, torch.zeros(1, 32, 32), 0)
    one = ActiveLearning(acquisition="entropy", mc_steps=1, metrics=SUITE)
    probs = one._mc_probs(module, torch.zeros(1, 32, 32), 0)
    assert probs.shape[-2:] == (32, 32)
    torch.testing.assert_close(probs.sum(0), torch.ones(32, 32))


@requires_duke()
@pytest.mark.slow
def test_edgeal_duke_experiment_runs_a_round(make_cfg) -> None:
    cfg = make_cfg(
        "experiment=edgeal_duke",
        f"paths.data_dir={SHARED_DIR / 'datasets'}",
        "logger=csv",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "model.net.base_channels=8",
        "callbacks.active_learning.epochs_per_round=1",
        "callbacks.active_learning.mc_steps=2",
        "callbacks.active_learning.mc_batch=2",
        "callbacks.active_learning.budget_images=1",
        "test=false",
        fast=False,
    )
    train(cfg)
    run = Path(cfg.paths.output_dir)
    (row,) = _curve(run)
    assert int(row["labelled_scans"]) == 1 and math.isfinite(float(row["dice"]))
    selections = _rounds(run)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if "ActiveLearning" in k]
    pool = unpack_masks(state["revealed"])  # every pool B-scan (widths differ on Duke)
    assert len(pool) == 66
    budget = round(np.mean([m.size for m in pool.values()]))  # one B-scan's worth
    assert sum(int(m.sum()) for m in selections[1].values()) == budget


def test_edgeal_duke_cpu_restarts_its_cosine_at_every_round(make_cfg) -> None:
    cfg = make_cfg("experiment=edgeal_duke_cpu", fast=False)
    al, dm = cfg.callbacks.active_learning, cfg.dataset.datamodule
    steps_per_round = al.epochs_per_round * al.samples_per_epoch // dm.batch_size
    assert al.samples_per_epoch % dm.batch_size == 0
    assert cfg.scheduler.interval == "step" and cfg.scheduler.factory.T_0 == steps_per_round
    assert cfg.augmentation.crop_on_labels
