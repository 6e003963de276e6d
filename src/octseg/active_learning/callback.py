"""Active learning as a Lightning callback around any supervised module (EdgeAL's loop).

``train.py`` stays module-agnostic: the ``active_learning`` callback
(``callbacks=active_learning``, used by ``experiment=edgeal_duke``) turns one ``fit`` into
rounds of ``epochs_per_round`` epochs.
At fit start it wraps the DataModule's training part in a
:class:`~octseg.active_learning.pool.RevealedLabelDataset` holding the labels of a random seed set
of whole B-scans (``initial_fraction``), and makes the trainer reload its loaders every epoch (the
number of labelled scans grows). At the end of every round it

1. evaluates the current weights on the test split through
   :func:`octseg.evaluation.commands.evaluate_module` (the same metric suite and report files as
   any test; ``<out_dir>/round_XX/``) and appends test Dice and boundary MAD against the share of
   pool pixels labelled to ``learning_curve_<acquisition>.csv`` (and ``.png``);
2. runs the acquisition on the pool (:mod:`octseg.active_learning.acquisition`): MC-dropout
   predictions (``mc_steps`` stochastic passes, only dropout layers in training mode), the Sobel
   edge prior, view entropy and divergence, SLIC superpixels, and the greedy selection of exactly
   ``budget_images`` B-scans' worth of pixels; the newly revealed pixels are written to
   ``round_XX_revealed.npz`` (atomic) and revealed for the next round;
3. re-initialises the network (PyTorch's default initialisation of every layer) and clears the
   optimizer state, as the official loop builds a new model every round (``reinit``).

The round counter, the revealed pixels and the curve are the callback's ``state_dict``, saved in
every checkpoint, so ``train.py ckpt_path=.../last.ckpt`` continues between (or within) rounds;
``trainer.max_epochs`` may be raised on resume to add rounds. Acquisition randomness (dropout
masks, the seed set, random scores) is seeded from ``(seed, round)`` only, so a resumed run
selects what the uninterrupted one would.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import nn

from octseg.active_learning.acquisition import (
    ACQUISITIONS,
    edge_view_maps,
    entropy_map,
    overlapping_superpixels,
    select_regions,
    sobel_edges,
    superpixel_means,
    superpixels,
)
from octseg.active_learning.curve import write_curve
from octseg.active_learning.pool import (
    RevealedLabelDataset,
    pack_masks,
    unpack_masks,
    unwrap_pool,
)
from octseg.evaluation.commands import evaluate_module
from octseg.utils.io import atomic_write_bytes

__all__ = ["ActiveLearning"]

log = logging.getLogger(__name__)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class ActiveLearning(pl.Callback):
    """Round-based active learning around the module being fitted (see the module docstring).

    Args:
        acquisition: ``random`` | ``entropy`` (MC-dropout entropy per superpixel) | ``edgeal``.
        epochs_per_round: training epochs between two acquisitions; ``trainer.max_epochs`` must
            be a multiple (rounds = max_epochs / epochs_per_round).
        samples_per_epoch: fixed epoch length in samples (null: the DataModule's
            ``train_repeats`` passes over the labelled scans, so early rounds with one or two
            labelled scans train only a few steps). See :class:`RevealedLabelDataset`.
        initial_fraction: share of the pool's B-scans fully labelled before round 0 (at least
            one scan).
        budget_images: pixels revealed per round, in B-scans (times the mean pool scan area).
        mc_steps: stochastic forward passes per pool scan (``entropy``, ``edgeal``).
        mc_batch: passes run together as one batch.
        superpixel_size: mean SLIC superpixel area in pixels.
        compactness: SLIC compactness on [0, 1]-scaled intensities.
        edge_threshold: largest edge-prior difference of two views of a pixel (``edgeal``).
        overlap: share of area above which superpixels of one volume overlap (``edgeal``).
        reinit: re-initialise the network and optimizer state after every acquisition.
        metrics: the metric-suite config for the per-round test (``conf/metrics/*.yaml``).
        out_dir: folder of the curve, the round reports and the selections.
        seed: seeds the seed set, the dropout masks and random scores with the round number.

    Raises:
        ValueError: for an unknown acquisition or a non-positive setting.
    """

    def __init__(
        self,
        acquisition: str = "edgeal",
        epochs_per_round: int = 5,
        samples_per_epoch: int | None = None,
        initial_fraction: float = 0.02,
        budget_images: float = 7.0,
        mc_steps: int = 20,
        mc_batch: int = 4,
        superpixel_size: int = 1000,
        compactness: float = 0.1,
        edge_threshold: float = 0.1,
        overlap: float = 0.25,
        reinit: bool = True,
        metrics: DictConfig | dict[str, Any] | None = None,
        out_dir: str = "active_learning",
        seed: int = 0,
    ) -> None:
        if acquisition not in ACQUISITIONS:
            raise ValueError(
                f"callbacks.active_learning.acquisition={acquisition!r}; expected one of "
                f"{list(ACQUISITIONS)}."
            )
        positive = {"epochs_per_round": epochs_per_round, "budget_images": budget_images,
                    "mc_steps": mc_steps, "mc_batch": mc_batch, "superpixel_size": superpixel_size}
        if samples_per_epoch is not None:
            positive["samples_per_epoch"] = samples_per_epoch
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"callbacks.active_learning.{name} must be > 0, got {value}.")
        if not 0.0 <= initial_fraction <= 1.0:
            raise ValueError(
                f"callbacks.active_learning.initial_fraction must be in [0, 1], got "
                f"{initial_fraction}."
            )
        if metrics is None:
            raise ValueError(
                "callbacks.active_learning.metrics is required (a metric suite config, e.g. "
                "${val_metrics}) to measure each round."
            )
        self.acquisition = acquisition
        self.epochs_per_round = int(epochs_per_round)
        self.samples_per_epoch = None if samples_per_epoch is None else int(samples_per_epoch)
        self.initial_fraction = float(initial_fraction)
        self.budget_images = float(budget_images)
        self.mc_steps, self.mc_batch = int(mc_steps), int(mc_batch)
        self.superpixel_size, self.compactness = int(superpixel_size), float(compactness)
        self.edge_threshold, self.overlap = float(edge_threshold), float(overlap)
        self.reinit = bool(reinit)
        self.metrics = metrics
        self.out_dir = Path(out_dir)
        self.seed = int(seed)
        #: acquisitions made so far (= rounds finished); the next round is number ``round``.
        self.round = 0
        self.curve: list[dict[str, Any]] = []
        self.revealed: list[np.ndarray] = []
        self.dataset: RevealedLabelDataset | None = None
        self._loaded: dict[str, Any] | None = None
        self._segments: list[np.ndarray] | None = None
        self._overlaps: dict[int, np.ndarray] | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        pool = self.dataset.pool if self.dataset is not None else None
        return {
            "round": self.round,
            "curve": [dict(row) for row in self.curve],
            "case_ids": list(pool.case_ids) if pool is not None else [],
            "revealed": pack_masks(
                {cid: rev for cid, rev in zip(pool.case_ids, self.revealed, strict=True)}
            )
            if pool is not None
            else b"",
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = dict(state_dict)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if getattr(trainer, "world_size", 1) > 1:
            raise ValueError(
                "The active-learning callback runs in one process (acquisition and per-round "
                f"reports are not distributed), got {trainer.world_size} processes; use "
                "trainer=cpu or trainer=gpu with one device."
            )
        max_epochs = trainer.max_epochs
        checked = not getattr(trainer, "fast_dev_run", False) and (max_epochs or 0) > 0
        if checked and max_epochs % self.epochs_per_round:
            raise ValueError(
                f"trainer.max_epochs={max_epochs} is not a multiple of "
                f"callbacks.active_learning.epochs_per_round={self.epochs_per_round}; set "
                "max_epochs = rounds x epochs_per_round."
            )
        # The number of labelled scans changes between rounds: rebuild the loaders each epoch.
        trainer.reload_dataloaders_every_n_epochs = 1

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        pool, repeats = unwrap_pool(datamodule.datasets["train"])
        if self._loaded:
            self._restore(pool)
        else:
            self.revealed = self._seed_set(pool)
        self.dataset = RevealedLabelDataset(
            pool, self.revealed, datamodule.ignore_index, repeats, self.samples_per_epoch
        )
        datamodule.datasets["train"] = self.dataset
        log.info(
            "Active learning (%s): round %d, %d of %d pool scans labelled, %.2f %% of pixels.",
            self.acquisition, self.round, len(self.dataset.indices), len(pool),
            self._labelled_percent(),
        )  # fmt: skip
        finished = trainer.current_epoch // self.epochs_per_round
        if trainer.current_epoch % self.epochs_per_round == 0 and finished > self.round:
            # A checkpoint written at a round's end before this callback ran: finish the round.
            self._end_round(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.epochs_per_round == 0:
            self._end_round(trainer, pl_module)

    # ------------------------------------------------------------------ rounds
    def _restore(self, pool: Any) -> None:
        state, self._loaded = self._loaded, None
        if list(state["case_ids"]) != list(pool.case_ids):
            raise ValueError(
                "The checkpoint's active-learning pool differs from this run's training scans "
                f"({len(state['case_ids'])} vs {len(pool.case_ids)} scans); resume with the "
                "same dataset and split."
            )
        masks = unpack_masks(state["revealed"])
        self.revealed = [masks[cid] for cid in pool.case_ids]
        self.round = int(state["round"])
        self.curve = [dict(row) for row in state["curve"]]

    def _seed_set(self, pool: Any) -> list[np.ndarray]:
        n = len(pool)
        count = min(n, max(1, round(self.initial_fraction * n)))
        chosen = np.random.default_rng(_seed(self.seed, 0)).choice(n, size=count, replace=False)
        revealed = [np.zeros(m.shape[:2], dtype=bool) for m in pool.masks]
        for i in chosen:
            revealed[int(i)][:] = True
        self._save_selection(0, pool, revealed)
        return revealed

    def _labelled_percent(self) -> float:
        total = sum(r.size for r in self.revealed)
        return 100.0 * sum(int(r.sum()) for r in self.revealed) / max(total, 1)

    def _end_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        was_training = pl_module.training
        start = time.perf_counter()
        result = evaluate_module(
            pl_module,
            trainer.datamodule,
            self.metrics,
            self.out_dir / f"round_{self.round:02d}",
            precision=trainer.precision,
            run_info={"active_learning_round": self.round, "epoch": trainer.current_epoch},
        )
        row: dict[str, Any] = {
            "round": self.round,
            "epoch": trainer.current_epoch,
            "acquisition": self.acquisition,
            "labelled_pixels": sum(int(r.sum()) for r in self.revealed),
            "labelled_scans": len(self.dataset.indices),
            "labelled_percent": self._labelled_percent(),
            "dice": result.dataset.get("dice", float("nan")),
            "mad_um": result.dataset.get("mad_um", float("nan")),
            "eval_s": time.perf_counter() - start,
        }
        timings = self._acquire(pl_module)
        row.update(timings)
        self.curve.append(row)
        write_curve(self.curve, self.out_dir, self.acquisition)
        self.round += 1
        self.dataset.refresh()
        if self.reinit:
            self._reinitialise(trainer, pl_module)
        pl_module.train(was_training)
        log.info(
            "Active learning round %d: Dice %.4f, MAD %.2f um at %.2f %% labelled; now %.2f %%.",
            row["round"], row["dice"], row["mad_um"], row["labelled_percent"],
            self._labelled_percent(),
        )  # fmt: skip

    def _reinitialise(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with torch.random.fork_rng(devices=self._rng_devices(pl_module)):
            torch.manual_seed(_seed(self.seed, self.round, 1))
            for module in pl_module.modules():
                if module is not pl_module and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        for optimizer in trainer.optimizers:
            optimizer.state.clear()

    @staticmethod
    def _rng_devices(pl_module: pl.LightningModule) -> list[int]:
        device = pl_module.device
        return [device.index or 0] if device.type == "cuda" else []

    # ------------------------------------------------------------------ acquisition
    def _acquire(self, pl_module: pl.LightningModule) -> dict[str, float]:
        """Selects this round's pixels, reveals them and saves them; returns timings (s)."""
        pool = self.dataset.pool
        plain = copy.copy(pool)
        plain.transform = None  # acquisition sees the B-scans as stored, not augmented
        timings = defaultdict(float)
        start = time.perf_counter()
        if self._segments is None:
            self._segments = [
                superpixels(plain[i]["image"][0].numpy(), self.superpixel_size, self.compactness)
                for i in range(len(pool))
            ]
        timings["superpixels_s"] += time.perf_counter() - start
        offsets = np.cumsum([0] + [int(s.max()) + 1 for s in self._segments])
        rank = np.zeros(offsets[-1])
        winner = np.zeros(offsets[-1])
        groups = self._volume_groups(pool)
        if self.acquisition == "edgeal" and self._overlaps is None:
            start = time.perf_counter()
            self._overlaps = {}
            for members in groups:
                segs = [self._segments[i] for i in members]
                self._overlaps.update(
                    overlapping_superpixels(segs, [offsets[i] for i in members], self.overlap)
                )
            timings["superpixels_s"] += time.perf_counter() - start
        if self.acquisition == "random":
            rank = np.random.default_rng(_seed(self.seed, self.round + 1, 2)).random(len(rank))
        else:
            for members in groups:
                start = time.perf_counter()
                probs = torch.stack(
                    [self._mc_probs(pl_module, plain[i]["image"], i) for i in members]
                )
                timings["mc_s"] += time.perf_counter() - start
                start = time.perf_counter()
                if self.acquisition == "edgeal":
                    edges = torch.from_numpy(
                        np.stack([sobel_edges(plain[i]["image"][0].numpy()) for i in members])
                    )
                    ent, div = edge_view_maps(probs, edges, self.edge_threshold)
                else:
                    ent, div = entropy_map(probs), torch.zeros(probs.shape[0], *probs.shape[2:])
                for k, i in enumerate(members):
                    ids = slice(offsets[i], offsets[i + 1])
                    rank[ids] = superpixel_means(ent[k].numpy(), self._segments[i])
                    winner[ids] = superpixel_means(div[k].numpy(), self._segments[i])
                timings["maps_s"] += time.perf_counter() - start
        start = time.perf_counter()
        free = np.concatenate(
            [
                np.bincount(seg[~rev], minlength=int(seg.max()) + 1)
                for seg, rev in zip(self._segments, self.revealed, strict=True)
            ]
        )
        mean_area = float(np.mean([r.size for r in self.revealed]))
        budget = int(round(self.budget_images * mean_area))
        overlaps = self._overlaps if self.acquisition == "edgeal" else None
        chosen = select_regions(rank, free, budget, winner=winner, overlaps=overlaps)
        new = [np.zeros_like(r) for r in self.revealed]
        for index, count in chosen:
            i = int(np.searchsorted(offsets, index, side="right")) - 1
            label = index - offsets[i]
            pixels = np.flatnonzero((self._segments[i] == label) & ~self.revealed[i])[:count]
            new[i].flat[pixels] = True
        for rev, add in zip(self.revealed, new, strict=True):
            rev |= add
        timings["select_s"] = time.perf_counter() - start
        self._save_selection(self.round + 1, pool, new)
        log.info(
            "Acquisition (%s) for round %d: %d pixels in %d superpixels (budget %d).",
            self.acquisition, self.round + 1, sum(int(n.sum()) for n in new), len(chosen), budget,
        )  # fmt: skip
        return dict(timings)

    @staticmethod
    def _volume_groups(pool: Any) -> list[list[int]]:
        """Pool indices grouped by volume and B-scan size (views share both)."""
        groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        for i, (vid, mask) in enumerate(zip(pool.volume_ids, pool.masks, strict=True)):
            groups.setdefault((vid, tuple(mask.shape[:2])), []).append(i)
        return list(groups.values())

    def _mc_probs(
        self, pl_module: pl.LightningModule, image: torch.Tensor, index: int
    ) -> torch.Tensor:
        """The mean softmax of ``mc_steps`` passes with only the dropout layers stochastic."""
        dropout = [m for m in pl_module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        if self.mc_steps > 1 and not any(m.p > 0 for m in dropout):
            raise ValueError(
                f"MC dropout needs a dropout layer, but {type(pl_module).__name__} has none with "
                "p > 0; add one (Y-Net: model.net.dropout=0.25) or set "
                "callbacks.active_learning.mc_steps=1."
            )
        pl_module.eval()
        for m in dropout:
            m.train()
        x = image[None].to(pl_module.device)
        total = None
        with torch.no_grad(), torch.random.fork_rng(devices=self._rng_devices(pl_module)):
            torch.manual_seed(_seed(self.seed, self.round + 1, 3, index))
            for start in range(0, self.mc_steps, self.mc_batch):
                n = min(self.mc_batch, self.mc_steps - start)
                probs = pl_module(x.expand(n, -1, -1, -1)).logits.float().softmax(dim=1).sum(0)
                total = probs if total is None else total + probs
        pl_module.eval()
        return (total / self.mc_steps).cpu()

    def _save_selection(self, round_index: int, pool: Any, new: list[np.ndarray]) -> None:
        masks = {cid: m for cid, m in zip(pool.case_ids, new, strict=True) if m.any()}
        path = self.out_dir / f"round_{round_index:02d}_revealed.npz"
        atomic_write_bytes(path, pack_masks(masks))

