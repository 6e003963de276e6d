"""SD-LayerNet's semi-supervised training (Fazekas et al., MICCAI 2022;
:mod:`octseg.models.sd_layernet`).

:class:`SDLayerNetModule` is a :class:`~octseg.modules.seg_module.SegModule` whose training step
splits each batch by its ``labelled`` flag (:class:`~octseg.data.base.PadCollate`): the network
runs once on the whole batch, the supervised objective (``objective``, ``loss=sd_layernet``)
scores the labelled rows and the unsupervised objective (``unsup_objective``) the unlabelled
rows, and the loss is ``alpha * L_sup + (1 - alpha) * L_unsup`` (official ``alpha = 0.5``); a
part absent from a batch contributes nothing. The official code draws one labelled and one
unlabelled batch per step from two loaders; here the DataModule mixes them in one shuffled
stream (``dataset.datamodule.labelled_fraction``, ``unlabelled: keep|drop``), so a step sees them
in the proportion of the training set. Validation, test and ``predict_step`` are SegModule's:
the logits are the log region masks, so predictions are label maps (evaluation unchanged).

Before fitting (:meth:`SDLayerNetModule.setup`), the per-surface curvature limits are
estimated from the training masks (without augmentation) and stored in the network's
``curvature_limits`` buffer, which checkpoints carry; a resumed or evaluated model keeps them.

Surface targets (``surface_rows``, ``surface_valid``, ``region_target``) are derived from the
masks by :func:`surface_targets` with the metrics' surface convention
(:func:`octseg.metrics.surfaces.label_ranks`: fluid counts as its enclosing layer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from octseg.data.base import RepeatedDataset
from octseg.metrics.surfaces import label_ranks, surfaces_from_ranks
from octseg.models.base import SegOutput
from octseg.models.blocks.layer_engine import estimate_curvature_limits
from octseg.modules.seg_module import SegModule, forward_by_size

__all__ = ["SDLayerNetModule", "select_rows", "surface_targets"]

log = logging.getLogger(__name__)


def surface_targets(
    mask: torch.Tensor, ordered_labels: Sequence[int], ignore_index: int = 255
) -> dict[str, torch.Tensor]:
    """Reference surfaces and regions of label maps.

    Args:
        mask: labels ``[B, H, W]`` (``ignore_index`` where unannotated or padded).
        ordered_labels: region labels top to bottom.
        ignore_index: unannotated label.

    Returns:
        ``surface_rows`` float ``[B, S, W]`` (row of the first pixel below each surface),
        ``surface_valid`` bool ``[B, W]`` (columns holding an annotated region pixel) and
        ``region_target`` int64 ``[B, H, W]`` (region index, ``ignore_index`` where unknown).
    """
    rank, defined = label_ranks(mask, ordered_labels)
    rows = surfaces_from_ranks(rank, len(ordered_labels)).float()
    region = torch.where(mask == ignore_index, ignore_index, rank.long())
    return {"surface_rows": rows, "surface_valid": defined, "region_target": region}


def select_rows(value: Any, index: torch.Tensor, batch_size: int) -> Any:
    """Rows ``index`` of a batched value (tensors with ``batch_size`` rows, lists, dicts,
    :class:`SegOutput`); anything else unchanged."""
    if isinstance(value, SegOutput):
        return SegOutput(
            logits=select_rows(value.logits, index, batch_size),
            aux=select_rows(value.aux, index, batch_size),
            reg=value.reg,
        )
    if isinstance(value, Mapping):
        return {k: select_rows(v, index, batch_size) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch_size:
        return value[index.to(value.device)]
    if isinstance(value, list) and len(value) == batch_size:
        return [value[i] for i in index.tolist()]
    return value


def _training_masks(trainer: Any) -> Iterator[torch.Tensor]:
    """The training masks, unaugmented when the dataset holds them (in-memory datasets),
    else the labelled rows of one pass over the training loader (cropped to their size)."""
    datamodule = trainer.datamodule
    dataset = getattr(datamodule, "datasets", {}).get("train")
    while isinstance(dataset, RepeatedDataset):
        dataset = dataset.dataset
    if dataset is not None and hasattr(dataset, "masks"):
        for mask in dataset.masks:
            if mask is not None:
                yield torch.as_tensor(mask).long()
        return
    for batch in datamodule.train_dataloader():
        if "mask" not in batch:
            continue
        for i in batch["labelled"].nonzero().flatten().tolist():
            h, w = batch["orig_hw"][i].tolist()
            yield batch["mask"][i, :h, :w]


class SDLayerNetModule(SegModule):
    """SegModule with SD-LayerNet's semi-supervised step (see the module docstring).

    Args:
        unsup_objective: the objective of unlabelled B-scans (``loss=sd_layernet``'s
            companion, ``conf/loss/sd_layernet_unsup.yaml``).
        alpha: weight of the supervised part, ``1 - alpha`` for the unsupervised one.
        ignore_index: the dataset's unannotated label.
        curvature_quantile: quantile of the training curvatures taken as each surface's
            limit (1.0: the maximum).
        estimate_curvature: estimate the limits from the training masks before fitting
            (false: keep the buffer's values, e.g. loaded weights).
        **kwargs: :class:`SegModule` arguments (``net``: an
            :class:`~octseg.models.sd_layernet.SDLayerNet`, ``objective``, ``optimizer``, ...).

    Raises:
        ValueError: if ``alpha`` is outside ``[0, 1]``.
    """

    hparams_ignore = (*SegModule.hparams_ignore, "unsup_objective")
    #: unlabelled training B-scans feed the unsupervised objective (train.py checks this).
    learns_from_unlabelled_scans = True

    def __init__(
        self,
        unsup_objective: nn.Module,
        alpha: float = 0.5,
        ignore_index: int = 255,
        curvature_quantile: float = 1.0,
        estimate_curvature: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"model.alpha must be in [0, 1], got {alpha}.")
        self.unsup_objective = unsup_objective
        self.alpha = float(alpha)
        self.ignore_index = int(ignore_index)
        self.curvature_quantile = float(curvature_quantile)
        self.estimate_curvature = bool(estimate_curvature)

    @property
    def layer_net(self) -> nn.Module:
        """The SD-LayerNet inside the padding wrapper."""
        return self.net.net

    @property
    def ordered_labels(self) -> list[int]:
        return self.layer_net.region_labels.tolist()

    # ------------------------------------------------------------------ curvature limits
    def estimate_curvature_limits(self, masks: Iterator[torch.Tensor]) -> torch.Tensor:
        """Per-surface limits ``[S]`` from label maps (``curvature_quantile`` of ``|kappa|``).

        Raises:
            ValueError: if no mask is given.
        """
        surfaces, valid = [], []
        for mask in masks:
            targets = surface_targets(mask[None].long(), self.ordered_labels, self.ignore_index)
            surfaces.append(targets["surface_rows"][0])
            valid.append(targets["surface_valid"][0])
        return estimate_curvature_limits(surfaces, valid, self.curvature_quantile)

    def setup(self, stage: str) -> None:
        """SegModule's checks, then (fitting) the curvature limits from the training masks."""
        super().setup(stage)
        trainer = getattr(self, "_trainer", None)
        if stage != "fit" or not self.estimate_curvature or trainer is None:
            return
        try:
            limits = self.estimate_curvature_limits(_training_masks(trainer))
        except ValueError:
            log.warning(
                "No labelled training B-scan: the curvature prior stays off "
                "(dataset.datamodule.labelled_fraction)."
            )
            return
        self.layer_net.set_curvature_limits(limits)
        log.info("Curvature limits from the training labels: %s", limits.tolist())

    # ------------------------------------------------------------------ steps
    def with_targets(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch plus the surface targets of its masks."""
        return {**batch, **surface_targets(batch["mask"], self.ordered_labels, self.ignore_index)}

    def model_step(self, batch: Mapping[str, Any]) -> tuple[SegOutput, dict[str, torch.Tensor]]:
        """The supervised objective on a labelled batch (validation, test): one forward per
        true B-scan size outside training, the losses averaged over the size groups."""
        if self.training or "orig_hw" not in batch:
            output = self(batch["image"])
            return output, self.objective(output, self.with_targets(batch))
        sizes = [tuple(hw) for hw in batch["orig_hw"].tolist()]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            groups.setdefault(size, []).append(i)
        full = len(groups) == 1 and sizes[0] == tuple(batch["image"].shape[-2:])
        order = iter(groups.items())
        parts: list[tuple[int, dict[str, torch.Tensor]]] = []
        n = batch["image"].shape[0]

        def forward(image: torch.Tensor) -> SegOutput:
            output = self(image)
            if full:
                parts.append((n, self.objective(output, self.with_targets(batch))))
                return output
            (h, w), members = next(order)
            index = torch.tensor(members, device=image.device)
            rows = select_rows(dict(batch), index, n)
            rows["image"], rows["mask"] = rows["image"][..., :h, :w], rows["mask"][..., :h, :w]
            parts.append((len(members), self.objective(output, self.with_targets(rows))))
            return output

        output = forward_by_size(forward, batch["image"], batch["orig_hw"])
        losses = {k: sum(v[k] * m for m, v in parts) / n for k in parts[0][1]}
        return output, losses

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """``alpha`` x supervised objective (labelled rows) + ``(1 - alpha)`` x unsupervised
        objective (unlabelled rows), one forward of the whole batch."""
        n = batch["image"].shape[0]
        if n < 2:
            raise ValueError(
                "SD-LayerNet's modality encoder (BatchNorm1d) needs at least 2 B-scans per "
                "training batch, got 1; raise dataset.datamodule.batch_size."
            )
        output = self(batch["image"])
        labelled = batch.get("labelled")
        if labelled is None:
            labelled = torch.full((n,), "mask" in batch, dtype=torch.bool)
        labelled = labelled.to(torch.bool).cpu()
        losses: dict[str, torch.Tensor] = {}
        total = output.logits.new_zeros(())
        for part, rows, objective, weight in (
            ("sup", labelled, self.objective, self.alpha),
            ("unsup", ~labelled, self.unsup_objective, 1.0 - self.alpha),
        ):
            index = rows.nonzero().flatten()
            if not len(index):
                continue
            sub_batch = select_rows(dict(batch), index, n)
            if part == "sup":
                sub_batch = self.with_targets(sub_batch)
            terms = objective(select_rows(output, index, n), sub_batch)
            total = total + weight * terms["loss"]
            losses.update({f"{part}/{k}": v for k, v in terms.items()})
        losses["loss"] = total
        self._log_losses("train", losses, n)
        return total
