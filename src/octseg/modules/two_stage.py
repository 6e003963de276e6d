"""Two-stage training: a prior network first, then the segmenter regularised by it, frozen.

:class:`TwoStageModule` is a :class:`~octseg.modules.seg_module.SegModule` with a second network,
the *prior*. For the first ``stage_a_epochs`` epochs only the prior trains (on its own
objective, :meth:`TwoStageModule.stage_a_losses`); from then on the prior is frozen
(``requires_grad_(False)``, eval mode, out of the optimizer) and the segmenter trains with
SegModule's step, whose objective may read what the prior adds to the output
(:meth:`TwoStageModule.add_prior_outputs`). Validation, test and ``predict_step`` are
SegModule's throughout (the evaluation package scores the segmenter).

**Switching optimizers.** At the first training epoch of stage B, ``on_train_epoch_start``
freezes the prior and calls ``trainer.strategy.setup_optimizers``, which runs
:meth:`configure_optimizers` again: stage A's optimizer holds the prior's parameters only, stage
B's the segmenter's only (and the scheduler, if any). This keeps Lightning's automatic
optimisation (gradient clipping, accumulation, precision plugins) unchanged, whereas manual
optimisation would have to redo all of it. The stage is a persistent buffer (``in_stage_b``) in
the state dict, and Lightning restores the module's state *before* it calls
:meth:`configure_optimizers` on a resume, so a checkpoint written in stage B resumes with the
stage-B optimizer (its saved state loads into matching parameter groups) and the prior frozen;
one written in stage A resumes in stage A and switches at the configured epoch. Strategies that
restore checkpoints after setting up (DeepSpeed) are not supported; under DDP the segmenter's
parameters receive no gradient in stage A, which needs ``find_unused_parameters`` (not tested).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from torch import nn

from octseg.losses.auxiliary import remap_labels
from octseg.losses.biomarker import BiomarkerLoss, column_thickness, masked_l1, scan_extent
from octseg.models.base import SegOutput
from octseg.modules.seg_module import SegModule

__all__ = ["BioNetModule", "TwoStageModule", "check_patience_outlasts"]

log = logging.getLogger(__name__)


def check_patience_outlasts(
    trainer: pl.Trainer, epochs: int, setting: str, stage: str, scored: str
) -> None:
    """Refuses early stopping whose patience could end training within the first ``epochs``
    epochs, while the part that validation scores (``scored``) does not train yet.

    Raises:
        ValueError: naming ``callbacks.early_stopping.patience`` and ``model.<setting>``.
    """
    checks = trainer.check_val_every_n_epoch or 1
    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.patience * checks <= epochs:
            raise ValueError(
                f"Early stopping (patience {callback.patience} validations) would end "
                f"training during {stage} (model.{setting}={epochs}), when {scored} does not "
                f"train yet. Raise callbacks.early_stopping.patience or lower model.{setting}."
            )


class TwoStageModule(SegModule):
    """SegModule plus a prior network trained first, then frozen (see the module docstring).

    Args:
        prior: the stage-A network; saved in checkpoints with the segmenter.
        stage_a_epochs: epochs of stage A (at least 1); stage B starts at this epoch index.
        prior_optimizer: partial optimizer factory for stage A (default: ``optimizer``). The
            scheduler applies to stage B only.
        **kwargs: :class:`SegModule`'s arguments (``net``, ``objective``, ``optimizer``, ...).

    Raises:
        ValueError: if ``stage_a_epochs < 1``.
    """

    hparams_ignore = (*SegModule.hparams_ignore, "prior", "prior_optimizer")

    def __init__(
        self,
        prior: nn.Module,
        stage_a_epochs: int,
        prior_optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(stage_a_epochs) < 1:
            raise ValueError(
                f"model.stage_a_epochs={stage_a_epochs}: the prior network trains for at least "
                "one epoch before it regularises the segmenter; set it to 1 or more."
            )
        self.prior = prior
        self.stage_a_epochs = int(stage_a_epochs)
        self.prior_optimizer_factory = prior_optimizer
        # Persistent: a resume learns the stage before configure_optimizers runs.
        self.register_buffer("in_stage_b", torch.tensor(False))

    # ------------------------------------------------------------------ stage bookkeeping
    @property
    def stage(self) -> str:
        """``"A"`` (prior training) or ``"B"`` (segmenter training, prior frozen)."""
        return "B" if bool(self.in_stage_b) else "A"

    def _apply_stage(self) -> None:
        frozen = self.stage == "B"
        self.prior.requires_grad_(not frozen)
        if frozen:
            self.prior.eval()

    def train(self, mode: bool = True) -> TwoStageModule:
        """Sets the mode; the frozen prior stays in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        if self.stage == "B":
            self.prior.eval()
        return self

    def on_fit_start(self) -> None:
        """Refuses early stopping that would end the run before stage B (the segmenter's
        validation scores cannot improve while only the prior trains)."""
        if self.stage == "A":
            check_patience_outlasts(
                self.trainer, self.stage_a_epochs, "stage_a_epochs", "stage A", "the segmenter"
            )

    def on_train_epoch_start(self) -> None:
        if self.stage == "A" and self.current_epoch >= self.stage_a_epochs:
            self.in_stage_b.fill_(True)
            self._apply_stage()
            log.info("Epoch %d: stage B, prior frozen, optimizer rebuilt.", self.current_epoch)
            self.trainer.strategy.setup_optimizers(self.trainer)
        self.log("train/stage_b", float(self.stage == "B"), on_step=False, on_epoch=True)

    def configure_optimizers(self) -> Any:
        self._apply_stage()
        if self.stage == "B":
            return super().configure_optimizers()
        factory = self.prior_optimizer_factory or self.optimizer_factory
        return factory(params=[p for p in self.prior.parameters() if p.requires_grad])

    # ------------------------------------------------------------------ steps
    def stage_a_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Stage A's ``{"loss": ..., "<term>": ...}`` for the prior (subclasses define it)."""
        raise NotImplementedError(f"{type(self).__name__} must define stage_a_losses.")

    def add_prior_outputs(self, output: SegOutput, batch: Mapping[str, Any]) -> SegOutput:
        """Adds the prior's view of the segmentation to ``output`` (default: nothing)."""
        return output

    def model_step(self, batch: Mapping[str, Any]) -> tuple[SegOutput, dict[str, torch.Tensor]]:
        output = self.add_prior_outputs(self.batch_forward(batch), batch)
        return output, self.objective(output, batch)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        if self.stage == "B":
            return super().training_step(batch, batch_idx)
        losses = self.stage_a_losses(batch)
        self._log_losses("train", losses, batch["image"].shape[0])
        return losses["loss"]


class BioNetModule(TwoStageModule):
    """BioNet's two stages (Zhang et al., IEEE JBHI 2020; :mod:`octseg.models.bionet`).

    Stage A trains the biomarker network to predict the per-column choroid thickness of the
    ground-truth choroid mask (L1). Stage B trains GMS and LCS (``net``) with the objective
    (``loss=bionet``: Dice + CE on LCS and GMS and the :class:`BiomarkerLoss` term, which
    compares the frozen biomarker network's prediction on ``softmax(LCS)`` with the
    ground-truth thickness).

    Args:
        biomarker: the biomarker network (:class:`~octseg.models.bionet.BiomarkerNet`).
        stage_a_epochs: epochs of biomarker training.
        thickness_unit: ``"px"`` or ``"um"`` for stage A's target; must match the loss term's.
        ignore_index: the dataset's unannotated label.
        **kwargs: :class:`TwoStageModule` / :class:`SegModule` arguments.
    """

    hparams_ignore = (*TwoStageModule.hparams_ignore, "biomarker")

    def __init__(
        self,
        biomarker: nn.Module,
        stage_a_epochs: int,
        thickness_unit: str = "px",
        ignore_index: int = 255,
        **kwargs: Any,
    ) -> None:
        super().__init__(prior=biomarker, stage_a_epochs=stage_a_epochs, **kwargs)
        self.thickness_unit = thickness_unit
        self.ignore_index = int(ignore_index)
        units = {t.unit for t in self.objective.modules() if isinstance(t, BiomarkerLoss)}
        if not units:
            log.warning(
                "The objective has no BiomarkerLoss term: the biomarker prior trains in stage A "
                "but never regularises the segmenter. Use loss=bionet."
            )
        elif units != {thickness_unit}:
            raise ValueError(
                f"model.thickness_unit={thickness_unit!r} but the loss's BiomarkerLoss uses "
                f"{sorted(units)}; set both to the same unit."
            )

    @property
    def biomarker(self) -> nn.Module:
        """The biomarker network (the prior)."""
        return self.prior

    def _lookup(self) -> torch.Tensor:
        return self.net.net.lcs_target_map

    def stage_a_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        mask = batch["mask"]
        thickness, valid = column_thickness(
            mask,
            self._lookup(),
            self.ignore_index,
            batch.get("orig_hw"),
            self.thickness_unit,
            batch.get("spacing_um"),
        )
        choroid = remap_labels(mask, self._lookup(), self.ignore_index) == 1
        pred = self.biomarker(choroid[:, None].to(batch["image"].dtype))
        loss = masked_l1(pred, thickness, valid)
        return {"loss": loss, "biomarker_pretrain": loss}

    def add_prior_outputs(self, output: SegOutput, batch: Mapping[str, Any]) -> SegOutput:
        """``aux["thickness_pred"] [B, W]``: the biomarker network on ``softmax(LCS)``'s choroid
        probability (zero outside each scan's true size)."""
        probs = output.aux["lcs_logits"].float().softmax(dim=1)[:, 1]
        probs = probs * scan_extent(tuple(probs.shape), batch.get("orig_hw"), probs.device)
        output.aux["thickness_pred"] = self.biomarker(probs[:, None])
        return output
