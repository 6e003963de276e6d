"""Streaming a module's per-scan predictions over a DataLoader into :class:`ScanPrediction`s.

Any LightningModule whose ``predict_step`` returns, per B-scan, a dict with ``case_id``,
``volume_id``, ``pred`` (labels ``[H, W]`` at the scan's true size) and ``target`` (and optionally
``probs [K, H, W]``, ``spacing_um``, ``scores [K]`` (a score of the whole scan per class) and
``uncertainty`` (a mapping of named per-scan values such as ISLAM's ``sigma_um/<surface>``,
written to ``uncertainty.csv``) can be evaluated by the evaluation package, whatever its
training procedure
(:meth:`octseg.modules.seg_module.SegModule.predict_step` is the reference).

Predictions are produced one batch at a time and handed on, so memory holds one batch, not the
whole test split (probabilities of 110 Duke B-scans alone would take over 1 GB).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from octseg.evaluation.label_maps import ScanPrediction

__all__ = ["predict_items", "predict_scans", "to_device"]


def to_device(batch: Any, device: torch.device) -> Any:
    """Moves every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _numpy(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def predict_items(
    model: pl.LightningModule,
    loader: Iterable[Any],
    precision: str | int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yields the per-scan dicts of ``model.predict_step`` over ``loader``, in loader order
    (labelled or not: prediction on new scans uses this directly).

    Args:
        model: a module whose ``predict_step`` follows the contract in the module docstring;
            it is put in eval mode and run without gradients on its current device.
        loader: batches (a DataLoader of full B-scans).
        precision: the trainer's precision setting; ``bf16-mixed`` runs under bf16 autocast.

    Raises:
        TypeError: if ``predict_step`` does not return per-scan dicts with ``pred``.
    """
    model.eval()
    device = model.device
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if "bf16" in str(precision or "")
        else nullcontext()
    )
    with torch.no_grad():
        for batch_idx, batch in enumerate(loader):
            with autocast:
                items = model.predict_step(to_device(batch, device), batch_idx)
            if not isinstance(items, list) or not all(
                isinstance(i, Mapping) and "pred" in i and "target" in i for i in items
            ):
                raise TypeError(
                    f"{type(model).__name__}.predict_step must return a list of per-scan dicts "
                    "with 'pred' and 'target' (see octseg.evaluation.predictions) to be "
                    "evaluated by OCTSeg's evaluation package."
                )
            yield from items


def predict_scans(
    model: pl.LightningModule,
    loader: DataLoader,
    keep_probs: bool = False,
    precision: str | int | None = None,
) -> Iterator[ScanPrediction]:
    """Yields one :class:`ScanPrediction` per scan of ``loader``, in loader order.

    Args:
        model: a module whose ``predict_step`` follows the contract in the module docstring;
            it is put in eval mode and run without gradients on its current device.
        loader: the split's DataLoader (full B-scans).
        keep_probs: keep class probabilities (for the probabilistic metrics).
        precision: the trainer's precision setting; ``bf16-mixed`` runs under bf16 autocast.

    Raises:
        TypeError: if ``predict_step`` does not return per-scan dicts with ``pred`` and
            ``target``.
        ValueError: for a scan without a reference mask.
    """
    for item in predict_items(model, loader, precision):
        if item["target"] is None:
            raise ValueError(
                f"Scan {item.get('case_id')!r} has no reference mask; evaluation needs "
                "a labelled split (the test split of a labelled dataset)."
            )
        spacing = item.get("spacing_um")
        uncertainty = item.get("uncertainty")
        yield ScanPrediction(
            case_id=str(item["case_id"]),
            volume_id=str(item["volume_id"]),
            pred=_numpy(item["pred"]),
            target=_numpy(item["target"]),
            probs=_numpy(item.get("probs")) if keep_probs else None,
            spacing_um=None if spacing is None else tuple(float(s) for s in spacing),
            scores=_numpy(item.get("scores")),
            uncertainty=None
            if uncertainty is None
            else {str(k): float(v) for k, v in uncertainty.items()},
        )
