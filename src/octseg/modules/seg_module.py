"""The generic supervised segmentation LightningModule shared by every method."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from octseg.models.base import SegOutput, as_seg_output
from octseg.models.checks import check_model_dataset
from octseg.models.wrappers import PadToDivisor

__all__ = ["SegModule", "forward_by_size"]


def _merge_batched(
    parts: list[tuple[torch.Tensor, Any]], batch_size: int, min_hw: tuple[int, int] = (0, 0)
) -> Any:
    """Places per-group values (tensors ``[b, ..., h, w]``, or lists of them) into one batch,
    zero-filled where a group's maps are smaller than the largest; anything not batched per
    sample is taken from the first group."""
    first = parts[0][1]
    if isinstance(first, (list, tuple)):
        return type(first)(
            _merge_batched([(index, value[k]) for index, value in parts], batch_size)
            for k in range(len(first))
        )
    if not (isinstance(first, torch.Tensor) and first.dim() >= 3):
        return first
    if any(value.shape[0] != len(index) for index, value in parts):
        return first
    h = max(min_hw[0], *(value.shape[-2] for _, value in parts))
    w = max(min_hw[1], *(value.shape[-1] for _, value in parts))
    merged = first.new_zeros((batch_size, *first.shape[1:-2], h, w))
    for index, value in parts:
        merged[index, ..., : value.shape[-2], : value.shape[-1]] = value
    return merged


def forward_by_size(
    forward: Callable[[torch.Tensor], SegOutput], image: torch.Tensor, orig_hw: torch.Tensor
) -> SegOutput:
    """Runs ``forward`` once per group of samples that share a true size, on the batch cropped
    to that size, and places the outputs back into batch tensors.

    Each B-scan is then seen by the network exactly as in a batch of its own size, whatever the
    batch holds and however it was padded, so predictions do not depend on the batch size.
    Outputs are zero where a sample was padded (its mask is ``ignore_index`` there);
    regularisers are averaged over the groups, weighted by their sizes.

    Args:
        forward: the network call, ``[b, C, h, w] -> SegOutput``.
        image: the padded batch ``[B, C, H, W]``.
        orig_hw: each sample's true ``(h, w)``, ``[B, 2]``.

    Returns:
        One :class:`SegOutput` for the whole batch (logits ``[B, K, H, W]``).
    """
    sizes = [tuple(hw) for hw in orig_hw.tolist()]
    if all(size == tuple(image.shape[-2:]) for size in sizes):
        return forward(image)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(size, []).append(i)
    parts = []
    for (h, w), members in groups.items():
        index = torch.tensor(members, device=image.device)
        parts.append((index, forward(image[index, :, :h, :w])))
    n = image.shape[0]
    first = parts[0][1]
    return SegOutput(
        logits=_merge_batched([(i, o.logits) for i, o in parts], n, tuple(image.shape[-2:])),
        aux={k: _merge_batched([(i, o.aux[k]) for i, o in parts], n) for k in first.aux},
        reg={k: sum(o.reg[k] * len(i) for i, o in parts) / n for k in first.reg},
    )


class SegModule(pl.LightningModule):
    """Supervised segmentation: network, objective, optimizer/scheduler and metric suites.

    One :meth:`model_step` serves training, validation and test. Logged keys: ``train/loss``,
    ``train/loss/<term>``, ``val/loss``, ``val/<metric>`` and ``val/<metric>/<class>`` (from the
    validation suite), ``test/...`` likewise (from the test suite).

    Args:
        net: the network (``(B,C,H,W) -> logits`` or :class:`SegOutput`); it is wrapped in
            :class:`PadToDivisor`, so any input size works.
        objective: ``(SegOutput, batch) -> {"loss": ..., "<term>": ...}``.
        optimizer: a partial optimizer factory ``params -> Optimizer``.
        scheduler: ``None`` or a mapping with ``factory`` (partial ``optimizer -> LRScheduler``),
            ``interval`` (``"epoch"``/``"step"``) and optional ``monitor``.
        val_metrics: metric suite for validation epochs (copied, never shared across stages).
        test_metrics: metric suite for the test split (defaults to a copy of ``val_metrics``).
        channels_last: run the network in channels-last memory format (faster for some CPU
            and GPU convolutions).
        compile: wrap the network with ``torch.compile`` (padding stays eager:
            :meth:`PadToDivisor.compiled`).
        in_channels: the dataset's input channels, checked against the network in
            :meth:`setup` (None: not checked).
        num_classes: the dataset's number of classes, checked likewise.
    """

    #: ``predict_step`` returns per-scan label maps (the contract of
    #: :mod:`octseg.evaluation.predictions`), so the evaluation package can evaluate this module.
    predicts_scans = True
    #: Constructor arguments kept out of ``hparams``: rebuilt from the run config stored in the
    #: checkpoint (subclasses with more networks or factories extend it).
    hparams_ignore: tuple[str, ...] = (
        "net",
        "objective",
        "optimizer",
        "scheduler",
        "val_metrics",
        "test_metrics",
    )

    def __init__(
        self,
        net: nn.Module,
        objective: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Mapping[str, Any] | None = None,
        val_metrics: nn.Module | None = None,
        test_metrics: nn.Module | None = None,
        channels_last: bool = False,
        compile: bool = False,
        in_channels: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self.hparams_ignore))
        self.net = net if isinstance(net, PadToDivisor) else PadToDivisor(net)
        self.objective = objective
        self.optimizer_factory = optimizer
        self.scheduler_cfg = scheduler
        self.val_metrics = copy.deepcopy(val_metrics) if val_metrics is not None else None
        source = test_metrics if test_metrics is not None else val_metrics
        self.test_metrics = copy.deepcopy(source) if source is not None else None
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # Kept out of the module registry so the state dict holds the parameters only once.
        self.__dict__["_compiled"] = self.net.compiled() if compile else None
        self.test_results: dict[str, float] = {}

    def setup(self, stage: str) -> None:
        """Checks that the network takes the dataset's channels and predicts its classes before
        any time is spent (the entry points know nothing of networks)."""
        if self.hparams.in_channels is not None and self.hparams.num_classes is not None:
            check_model_dataset(
                self.net,
                int(self.hparams.in_channels),
                int(self.hparams.num_classes),
                model_name=f"model.net <{type(self.net.net).__name__}>",
            )

    # ------------------------------------------------------------------ forward and steps
    def forward(self, image: torch.Tensor) -> SegOutput:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        net = self._compiled if self._compiled is not None else self.net
        return as_seg_output(net(image))

    def model_step(self, batch: Mapping[str, Any]) -> tuple[SegOutput, dict[str, torch.Tensor]]:
        output = self.batch_forward(batch)
        return output, self.objective(output, batch)

    def batch_forward(self, batch: Mapping[str, Any]) -> SegOutput:
        """One batched forward in training; outside training, one forward per true B-scan size
        (:func:`forward_by_size`), so evaluation does not depend on the batch size."""
        if self.training or "orig_hw" not in batch:
            return self(batch["image"])
        return forward_by_size(self, batch["image"], batch["orig_hw"])

    def _log_losses(self, stage: str, losses: Mapping[str, torch.Tensor], batch_size: int) -> None:
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            losses["loss"],
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=not on_step,
        )
        terms = {f"{stage}/loss/{k}": v.detach() for k, v in losses.items() if k != "loss"}
        if len(terms) > 1:
            self.log_dict(
                terms, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True
            )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        _, losses = self.model_step(batch)
        self._log_losses("train", losses, batch["image"].shape[0])
        return losses["loss"]

    def _eval_step(
        self, stage: str, batch: Mapping[str, Any], metrics: nn.Module | None
    ) -> SegOutput:
        output, losses = self.model_step(batch)
        self._log_losses(stage, losses, batch["image"].shape[0])
        if metrics is not None:
            metrics.update(
                output.logits.detach(),
                batch["mask"],
                batch.get("volume_index"),
                spacing_um=batch.get("spacing_um"),
            )
        return output

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step("val", batch, self.val_metrics)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step("test", batch, self.test_metrics)

    def _log_suite(self, stage: str, metrics: nn.Module | None) -> dict[str, float]:
        if metrics is None:
            return {}
        values = {f"{stage}/{k}": v for k, v in metrics.compute().items()}
        metrics.reset()
        # Values are already synchronised across ranks by the metric suite.
        self.log_dict({k: v.float() for k, v in values.items()}, sync_dist=False)
        return {k: float(v) for k, v in values.items()}

    def on_validation_epoch_end(self) -> None:
        self._log_suite("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_suite("test", self.test_metrics)

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Returns, per B-scan, the label map and class probabilities at the scan's true size."""
        probs = self.batch_forward(batch).logits.float().softmax(dim=1)
        return self.scan_results(batch, probs.argmax(dim=1), probs)

    @staticmethod
    def scan_results(
        batch: Mapping[str, Any],
        labels: torch.Tensor,
        probs: torch.Tensor | None,
        extras: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """The per-scan dicts of the ``predict_step`` contract (:mod:`octseg.evaluation.
        predictions`), cropped to each scan's true size.

        Args:
            batch: the batch (``orig_hw``, ``case_id``, ``volume_id``, optional ``mask`` and
                ``spacing_um``).
            labels: predicted labels ``[B, H, W]``.
            probs: class probabilities ``[B, K, H, W]`` or None.
            extras: optional per-scan entries added to each dict (e.g. ``uncertainty``).
        """
        results = []
        for i, (h, w) in enumerate(batch["orig_hw"].tolist()):
            results.append(
                {
                    "case_id": batch["case_id"][i],
                    "volume_id": batch["volume_id"][i],
                    "pred": labels[i, :h, :w].cpu(),
                    "probs": None if probs is None else probs[i, :, :h, :w].cpu(),
                    "target": batch["mask"][i, :h, :w].cpu() if "mask" in batch else None,
                    "spacing_um": batch["spacing_um"][i].tolist()
                    if "spacing_um" in batch
                    else None,
                    **(extras[i] if extras else {}),
                }
            )
        return results

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(
            params=[p for p in self.parameters() if p.requires_grad]
        )
        if not self.scheduler_cfg:
            return optimizer
        scheduler = {
            "scheduler": self.scheduler_cfg["factory"](optimizer=optimizer),
            "interval": self.scheduler_cfg.get("interval", "epoch"),
            "frequency": 1,
        }
        if self.scheduler_cfg.get("monitor"):
            scheduler["monitor"] = self.scheduler_cfg["monitor"]
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
