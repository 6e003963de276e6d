"""Several checkpoints as one predictor: fold ensembles and horizontal-flip test-time augmentation.

:func:`load_trained_modules` rebuilds each checkpoint's module from its stored run config (the
one load path, :func:`~octseg.evaluation.checkpoint.restore_run_config`) and refuses members
that cannot be averaged (other classes, input channels or intensity normalisation).
:class:`EnsemblePredictor` follows the ``predict_step`` contract of
:mod:`octseg.evaluation.predictions`, so ``eval.py`` evaluates an ensemble through the same path
as a single model, and ``predict.py`` runs it on new scans.

Averaging is over class probabilities (softmax of each member's logits), as nnU-Net does for its
fold ensembles: every member and every augmented view weighs the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from octseg.evaluation.checkpoint import load_checkpoint, restore_run_config

__all__ = [
    "TTA_MODES",
    "EnsemblePredictor",
    "TrainedModule",
    "as_path_list",
    "build_predictor",
    "describe",
    "flip_batch",
    "load_trained_modules",
]

#: ``tta=`` values: None (plain prediction) or ``flip`` (average with the left-right mirror).
TTA_MODES = (None, "flip")


@dataclass
class TrainedModule:
    """A module rebuilt from a checkpoint, with the run config it was trained with.

    Attributes:
        path: the checkpoint file.
        module: the LightningModule with the checkpoint's weights (eval mode).
        run_cfg: the re-composed training config (dataset metadata, normalisation, anatomy).
        ckpt: the loaded checkpoint (memory-mapped; weights already copied into ``module``).
    """

    path: Path
    module: pl.LightningModule
    run_cfg: DictConfig
    ckpt: dict[str, Any]


def as_path_list(ckpt_path: Any) -> list[Path]:
    """``ckpt_path=a`` or ``ckpt_path=[a,b]`` as a list of paths.

    Raises:
        ValueError: for an empty list or None.
    """
    if ckpt_path is None or (not isinstance(ckpt_path, str) and len(ckpt_path) == 0):
        raise ValueError(
            "ckpt_path is empty; give one checkpoint (ckpt_path=RUN/checkpoints/best.ckpt) or "
            "a list for a fold ensemble ('ckpt_path=[A.ckpt,B.ckpt]')."
        )
    if isinstance(ckpt_path, (str, Path)):
        return [Path(ckpt_path)]
    return [Path(str(p)) for p in ckpt_path]


def _member_facts(cfg: DictConfig) -> dict[str, Any]:
    """What members of one ensemble must share: they see the same input tensor and their
    probabilities are averaged class by class."""
    dm = cfg.dataset.get("datamodule") or {}
    return {
        "dataset.num_classes": int(cfg.dataset.num_classes),
        "dataset.class_names": list(cfg.dataset.get("class_names") or []),
        "dataset.in_channels": int(cfg.dataset.get("in_channels", 1)),
        "dataset.datamodule.mean": float(dm.get("mean", 0.0)),
        "dataset.datamodule.std": float(dm.get("std", 1.0)),
    }


def load_trained_modules(
    ckpt_paths: Sequence[str | Path],
    user_overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> list[TrainedModule]:
    """Loads one or several checkpoints written by ``train.py``.

    Args:
        ckpt_paths: the checkpoints (a fold ensemble when several).
        user_overrides: overrides applied on top of each stored run config (e.g.
            ``paths.data_dir=...``); invocation-only keys are dropped.
        device: where the modules go.

    Returns:
        One :class:`TrainedModule` per checkpoint, in order.

    Raises:
        FileNotFoundError, ValueError: as :func:`~octseg.evaluation.checkpoint.load_checkpoint`;
            ValueError also when members differ in classes, input channels or normalisation
            (naming both checkpoints and the differing setting).
    """
    loaded = []
    for path in ckpt_paths:
        ckpt = load_checkpoint(path)
        loaded.append((Path(path), ckpt, restore_run_config(ckpt, user_overrides)))
    # Checked before any network is built, so a mismatch reads as such, not as a weight error.
    first = _member_facts(loaded[0][2])
    for path, _, run_cfg in loaded[1:]:
        facts = _member_facts(run_cfg)
        differing = [k for k in first if first[k] != facts[k]]
        if differing:
            details = "; ".join(
                f"{k}: {loaded[0][0]} has {first[k]!r}, {path} has {facts[k]!r}" for k in differing
            )
            raise ValueError(
                f"The checkpoints of ckpt_path cannot be ensembled: {details}. An ensemble "
                "averages class probabilities of one input, so every member must be trained on "
                "the same classes, input channels and intensity normalisation; pass checkpoints "
                "of one dataset (e.g. the folds of one method)."
            )
    members: list[TrainedModule] = []
    for path, ckpt, run_cfg in loaded:
        module = hydra.utils.instantiate(run_cfg.model)
        module.load_state_dict(ckpt["state_dict"])
        module.to(device).eval()
        members.append(TrainedModule(path, module, run_cfg, ckpt))
    return members


def flip_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch mirrored left-right, each sample within its own true size (``orig_hw``), so
    the bottom-right padding of :class:`~octseg.data.base.PadCollate` stays where it was."""
    out = dict(batch)
    sizes = batch["orig_hw"].tolist() if "orig_hw" in batch else None
    for key in ("image", "mask"):
        if key not in batch:
            continue
        value = batch[key].clone()
        if sizes is None:
            value = value.flip(-1)
        else:
            for i, (h, w) in enumerate(sizes):
                value[i, ..., :h, :w] = value[i, ..., :h, :w].flip(-1)
        out[key] = value
    return out


class EnsemblePredictor(pl.LightningModule):
    """Averages the class probabilities of several modules and augmented views.

    Args:
        members: modules whose ``predict_step`` returns per-scan ``probs [K, h, w]`` (as
            :meth:`octseg.modules.seg_module.SegModule.predict_step`).
        tta: None, or ``flip`` to add each member's prediction of the mirrored B-scan
            (mirrored back before averaging).

    Raises:
        ValueError: for no member or an unknown ``tta``.
    """

    predicts_scans = True

    def __init__(self, members: Sequence[pl.LightningModule], tta: str | None = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("EnsemblePredictor needs at least one member module.")
        if tta not in TTA_MODES:
            raise ValueError(f"tta={tta!r}; expected one of {list(TTA_MODES)} (null or flip).")
        self.members = nn.ModuleList(members)
        self.tta = tta

    def _views(self, batch: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], bool]]:
        views: list[tuple[Mapping[str, Any], bool]] = [(batch, False)]
        if self.tta == "flip":
            views.append((flip_batch(batch), True))
        return views

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Per B-scan: the mean probabilities over members and views, and their argmax."""
        sums: list[torch.Tensor] | None = None
        first_items: list[dict[str, Any]] = []
        count = 0
        for member in self.members:
            for view, flipped in self._views(batch):
                items = member.predict_step(view, batch_idx)
                if not flipped and not first_items:
                    first_items = items
                probs = []
                for item in items:
                    p = item.get("probs")
                    if p is None:
                        raise TypeError(
                            f"{type(member).__name__}.predict_step returns no 'probs'; an "
                            "ensemble or tta averages class probabilities, so every member "
                            "must return them."
                        )
                    p = p.float()
                    probs.append(p.flip(-1) if flipped else p)
                sums = probs if sums is None else [s + p for s, p in zip(sums, probs, strict=True)]
                count += 1
        results = []
        for item, total in zip(first_items, sums or [], strict=True):
            mean = total / count
            results.append({**item, "probs": mean, "pred": mean.argmax(dim=0)})
        return results


def build_predictor(
    members: Sequence[TrainedModule], tta: str | None = None
) -> pl.LightningModule:
    """The module that predicts: the single member itself when there is one and no TTA (so a
    plain evaluation is exactly the module's own), else an :class:`EnsemblePredictor`."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r}; expected null or flip.")
    if len(members) == 1 and tta is None:
        return members[0].module
    predictor = EnsemblePredictor([m.module for m in members], tta=tta)
    return predictor.to(members[0].module.device)


def describe(members: Sequence[TrainedModule]) -> dict[str, Any]:
    """Facts about the members for a report's ``run`` entry (lists for an ensemble)."""
    facts = {
        "ckpt_path": [str(m.path.resolve()) for m in members],
        "run_name": [OmegaConf.select(m.run_cfg, "run_name") for m in members],
        "global_step": [m.ckpt.get("global_step") for m in members],
        "epoch": [m.ckpt.get("epoch") for m in members],
    }
    return {k: v[0] if len(members) == 1 else v for k, v in facts.items()}
