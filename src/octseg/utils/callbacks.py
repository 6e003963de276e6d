"""OCTSeg's own Lightning callbacks (the rest are Lightning's, configured in conf/callbacks)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

__all__ = [
    "EpochSeed",
    "StoreRunConfig",
    "LogPredictionOverlays",
    "LastCheckpointOnException",
    "label_overlay",
    "label_palette",
]


# Fixed colours per label (0 is transparent): layers, choroid, fluid.
_PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [128, 128, 128],
        [250, 20, 250],
        [210, 245, 60],
        [0, 128, 128],
        [170, 110, 40],
        [128, 0, 0],
        [170, 255, 195],
    ],
    dtype=np.float32,
)


def label_palette() -> np.ndarray:
    """The label colours of overlays as uint8 RGB ``[N, 3]`` (row ``k`` colours label ``k``),
    for palette PNGs of label maps."""
    return _PALETTE.astype(np.uint8)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blends a label map over a grayscale image; returns uint8 RGB ``[H, W, 3]``.

    Args:
        image: grayscale ``[H, W]``, any range (min-max scaled here).
        labels: integer labels ``[H, W]``; label 0 and labels beyond the palette stay uncoloured.
        alpha: opacity of the label colours.
    """
    img = image.astype(np.float32)
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6) * 255.0
    rgb = np.repeat(img[..., None], 3, axis=-1)
    lab = labels.astype(np.int64)
    coloured = (lab > 0) & (lab < len(_PALETTE))
    colours = _PALETTE[np.clip(lab, 0, len(_PALETTE) - 1)]
    rgb[coloured] = (1 - alpha) * rgb[coloured] + alpha * colours[coloured]
    return rgb.clip(0, 255).astype(np.uint8)


class StoreRunConfig(pl.Callback):
    """Stores the resolved run config, the command-line overrides it was composed from, and the
    W&B run id (to resume the same run) inside every checkpoint, so that
    ``eval.py ckpt_path=...`` can rebuild model and dataset."""

    def __init__(self, config: dict[str, Any], overrides: list[str] | None = None) -> None:
        self.config = config
        self.overrides = list(overrides or [])

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["octseg_config"] = self.config
        checkpoint["octseg_overrides"] = self.overrides
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                checkpoint["wandb_run_id"] = logger.version


class LogPredictionOverlays(pl.Callback):
    """Every ``every_n_epochs`` validation epochs, logs image / ground truth / prediction
    overlays of the first validation batch to every logger that can show images (W&B,
    TensorBoard). Batches without masks (image-level sets) are skipped."""

    def __init__(self, every_n_epochs: int = 5, max_images: int = 4) -> None:
        self.every_n_epochs = every_n_epochs
        self.max_images = max_images

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if "mask" not in batch:  # image-level sets: no ground truth to show
            return
        if self.every_n_epochs <= 0 or trainer.current_epoch % self.every_n_epochs != 0:
            return
        with torch.no_grad():
            pred = pl_module(batch["image"][: self.max_images]).logits.argmax(1).cpu().numpy()
        images = batch["image"][: self.max_images, 0].float().cpu().numpy()
        masks = batch["mask"][: self.max_images].cpu().numpy()
        panels = []
        for img, gt, pr, (h, w) in zip(
            images, masks, pred, batch["orig_hw"].tolist(), strict=False
        ):
            gt = np.where(gt == getattr(trainer.datamodule, "ignore_index", 255), 0, gt)
            row = [
                label_overlay(img, np.zeros_like(gt)),
                label_overlay(img, gt),
                label_overlay(img, pr),
            ]
            panels.append(np.concatenate([p[:h, :w] for p in row], axis=1))
        captions = [f"{cid}: image | ground truth | prediction" for cid in batch["case_id"]]
        for logger in trainer.loggers:
            name = type(logger).__name__
            if name == "WandbLogger":
                logger.log_image(
                    key="val/overlays",
                    images=panels,
                    caption=captions[: len(panels)],
                    step=trainer.global_step,
                )
            elif name == "TensorBoardLogger":
                for i, panel in enumerate(panels):
                    logger.experiment.add_image(
                        f"val/overlay_{i}", panel, trainer.global_step, dataformats="HWC"
                    )


class LastCheckpointOnException(pl.Callback):
    """Writes ``<dirpath>/<filename>.ckpt`` (``last.ckpt``) when training stops on Ctrl-C,
    SIGTERM or a crash, so that ``ckpt_path=.../last.ckpt`` resumes from the interruption.

    Only after training really started (a checkpoint, if any, was restored) and made at least
    one optimizer step since: a resume that fails while restoring, or a crash before the first
    step, must not replace a good ``last.ckpt`` with untrained weights.

    Written by hand rather than using Lightning's ``OnExceptionCheckpoint``, which deletes its
    file after a normal end (here it is the same ``last.ckpt`` that ``ModelCheckpoint`` keeps)
    and makes every ``fit`` without ``ckpt_path`` try to resume from it.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = str(Path(dirpath) / f"{filename}.ckpt")
        self._start_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_step = trainer.global_step  # after any checkpoint was restored

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        started = self._start_step is not None and trainer.global_step > self._start_step
        if trainer.state.fn == "fit" and not trainer.sanity_checking and started:
            trainer.save_checkpoint(self.path)


class EpochSeed(pl.Callback):
    """Re-seeds torch, numpy and ``random`` before the first batch of every training epoch from
    ``(seed, epoch, rank)``, so the random numbers a model draws while training (dropout,
    stochastic depth, random masking) depend only on those: a run resumed from an end-of-epoch
    checkpoint continues exactly as the uninterrupted run (the data order and augmentation are
    made epoch-exact by the DataModule's sampler and transform).

    At the first batch rather than at ``on_train_epoch_start``: Lightning creates each epoch's
    DataLoader iterator, which draws a seed from the global generator, after that hook in every
    epoch but a fit's first, and a fit resumed from an epoch-end ``last.ckpt`` skips that hook
    in its first epoch; either would shift the stream of a resumed run.

    Args:
        seed: the run's seed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx != 0:
            return
        entropy = [self.seed, trainer.current_epoch, trainer.global_rank]
        value = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)
