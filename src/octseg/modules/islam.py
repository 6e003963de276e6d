"""ISLAM 2024's LightningModule: SDF regression trained by SegModule, evaluated on decoded
surfaces, with the per-surface uncertainty saved alongside the predictions.

The network (:class:`octseg.models.islam.ISLAMNet`) regresses a signed distance map and its
log-variance per surface; the objective (``loss=islam``) is the clamped Gaussian NLL
(:mod:`octseg.losses.islam`). Training is SegModule's. Outside training, the label maps scored by
the validation metrics and returned by :meth:`IslamModule.predict_step` are the *decoded* ones
(zero crossing per column, monotone surfaces, rasterised: :mod:`octseg.models.islam`), so the
layer order is always valid; the decoding runs on each scan at its true size, after the padding
added for the network is cropped. ``predict_step`` also returns, per scan, the mean over its
columns of each surface's ``sigma`` at the crossing, in micrometres (the scan's axial spacing),
under ``uncertainty`` (written by the evaluation package to ``uncertainty.csv``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from octseg.losses.islam import ClampedGaussianNLL
from octseg.models.base import SegOutput
from octseg.models.islam import decode_surfaces, order_surfaces, rasterise_surfaces
from octseg.modules.seg_module import SegModule

__all__ = ["IslamModule", "decode_output"]

log = logging.getLogger(__name__)


def decode_output(
    output: SegOutput, ordered_labels: Sequence[int], orig_hw: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Decodes a batch of SDF outputs to label maps.

    Args:
        output: the network output with ``aux["sdf_mean"]`` (and ``aux["sdf_logvar"]``).
        ordered_labels: region labels top to bottom.
        orig_hw: each image's true ``(h, w)`` ``[B, 2]``, or None (the full maps).

    Returns:
        ``(labels [B, H, W], surfaces [B, S, W], sigma [B, S, W] or None)``: surfaces ordered
        and in edge coordinates, ``sigma`` in pixels.
    """
    mean = output.aux["sdf_mean"]
    heights = None if orig_hw is None else orig_hw[:, 0]
    surfaces, sigma = decode_surfaces(mean, output.aux.get("sdf_logvar"), heights)
    surfaces = order_surfaces(surfaces, heights)
    labels = rasterise_surfaces(surfaces, mean.shape[-2], ordered_labels)
    return labels, surfaces, sigma


class IslamModule(SegModule):
    """SegModule whose evaluation label maps are decoded from the regressed SDFs.

    Args:
        surface_names: one name per surface (``dataset.anatomy.surface_names``); default
            ``surface_<k>``.
        **kwargs: :class:`SegModule`'s arguments; ``net`` must return ``aux["sdf_mean"]`` and
            ``aux["sdf_logvar"]`` and expose ``ordered_labels`` (:class:`ISLAMNet`).

    Raises:
        ValueError: if the network has no ``ordered_labels`` or the names do not match its
            surfaces.
    """

    def __init__(self, surface_names: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ordered = getattr(self.net.net, "ordered_labels", None)
        if ordered is None:
            raise ValueError(
                f"IslamModule needs a network with ordered_labels (model.net), got "
                f"{type(self.net.net).__name__}."
            )
        self.ordered_labels = [int(v) for v in ordered]
        count = len(self.ordered_labels) - 1
        names = list(surface_names) if surface_names else [f"surface_{k}" for k in range(count)]
        if len(names) != count:
            raise ValueError(
                f"model.surface_names has {len(names)} names but the network regresses {count} "
                "surfaces (dataset.anatomy.ordered_labels); make them agree."
            )
        self.surface_names = [str(n) for n in names]
        if not any(isinstance(t, ClampedGaussianNLL) for t in self.objective.modules()):
            log.warning(
                "model=islam without the clamped Gaussian NLL (loss=islam): the configured loss "
                "trains the Gaussian region probabilities, not ISLAM's signed distance regression."
            )

    def decode(
        self, output: SegOutput, orig_hw: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:func:`decode_output` with this module's labels."""
        return decode_output(output, self.ordered_labels, orig_hw)

    def model_step(self, batch: Mapping[str, Any]) -> tuple[SegOutput, dict[str, torch.Tensor]]:
        """SegModule's step; outside training the logits become the one-hot decoded label maps,
        so validation and test metrics score what ISLAM predicts."""
        output, losses = super().model_step(batch)
        if not self.training:
            labels, _, _ = self.decode(output, batch.get("orig_hw"))
            one_hot = F.one_hot(labels, output.logits.shape[1]).permute(0, 3, 1, 2)
            output.logits = one_hot.to(output.logits.dtype)
        return output, losses

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Per B-scan: the decoded label map, the Gaussian class probabilities, and
        ``uncertainty`` ``{"sigma_um/<surface>": mean sigma over the scan's columns}``
        (``sigma_px/<surface>`` when the batch carries no spacing)."""
        output = self.batch_forward(batch)
        labels, _, sigma = self.decode(output, batch["orig_hw"])
        probs = output.logits.float().softmax(dim=1)
        extras = []
        for i, (_, w) in enumerate(batch["orig_hw"].tolist()):
            uncertainty = None
            if sigma is not None:
                axial = float(batch["spacing_um"][i][0]) if "spacing_um" in batch else None
                key = "sigma_px" if axial is None else "sigma_um"
                per_surface = sigma[i, :, :w].double().mean(dim=-1) * (axial or 1.0)
                uncertainty = {
                    f"{key}/{name}": float(v)
                    for name, v in zip(self.surface_names, per_surface.tolist(), strict=True)
                }
            extras.append({"uncertainty": uncertainty})
        return self.scan_results(batch, labels, probs, extras)
