"""Bi-directional connectivity (BiconNet) targets, bilateral voting and the multi-scale
connectivity loss of RetiFluidNet.

Connectivity of a binary map ``m`` at pixel ``p`` towards neighbour ``k`` (8 neighbours, offsets
:data:`NEIGHBOURS`: row-major over the 3 x 3 window without its
centre) is ``m(p) m(p + d_k)``; neighbours outside the image count as 0. Bilateral voting keeps a
predicted connection only when both ends agree: ``vote_k(p) = c_k(p) c_{7-k}(p + d_k)`` (channel
``7 - k`` points back from the neighbour to ``p``).

References: Yang Z., Soltanian-Zadeh S., Farsiu S., "BiconNet: An Edge-preserved Connectivity-based
Approach for Salient Object Detection", Pattern Recognit. 121:108231, 2022
(doi:10.1016/j.patcog.2021.108231); its use per class and scale in RetiFluidNet (Rasti et al.,
IEEE TMI 42(5):1413, 2023; official ``losses.py`` ``bicon_loss_new`` / ``training_loss``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from octseg.losses.terms import masked_one_hot
from octseg.models.base import SegOutput

__all__ = [
    "NEIGHBOURS",
    "ConnectivityLoss",
    "bilateral_vote",
    "connectivity_target",
    "neighbour_maps",
]

#: ``(row, column)`` offsets of the 8 connectivity channels (upstream's order); channel ``k`` and
#: ``7 - k`` point in opposite directions.
NEIGHBOURS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1),
)  # fmt: skip
# Keras' BinaryCrossentropy clips probabilities to [eps, 1 - eps] with this eps.
_EPS = 1e-7
_EDGE_SOURCES = ("target", "prediction")


def neighbour_maps(x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """The 8 neighbours of every pixel: ``[..., H, W] -> [..., 8, H, W]`` with
    ``out[..., k, r, c] = x[..., r + dr_k, c + dc_k]`` (``fill`` outside the image)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="constant", value=fill)
    return torch.stack(
        [padded[..., 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr, dc in NEIGHBOURS], dim=-3
    )


def connectivity_target(mask: torch.Tensor) -> torch.Tensor:
    """Ground-truth connectivity of binary maps: ``[..., H, W] -> [..., 8, H, W]``, 1 where a
    pixel and its neighbour ``k`` are both foreground (outside the image: 0)."""
    mask = mask.float()
    return mask.unsqueeze(-3) * neighbour_maps(mask)


def bilateral_vote(conn: torch.Tensor) -> torch.Tensor:
    """Bilateral voting of connectivity probabilities ``[..., 8, H, W]``: channel ``k`` at ``p``
    times channel ``7 - k`` at ``p + d_k`` (0 outside the image)."""
    h, w = conn.shape[-2:]
    back = F.pad(conn.flip(-3), (1, 1, 1, 1))  # channel k now holds 7 - k
    shifted = torch.stack(
        [
            back[..., k, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
            for k, (dr, dc) in enumerate(NEIGHBOURS)
        ],
        dim=-3,
    )
    return conn * shifted


def _bce(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise binary cross-entropy of probabilities clipped as Keras does (written out:
    ``F.binary_cross_entropy`` refuses autocast)."""
    prob = prob.clamp(_EPS, 1.0 - _EPS)
    return -(target * prob.log() + (1.0 - target) * (1.0 - prob).log())


def _masked_mean(
    values: torch.Tensor, weight: torch.Tensor, dims: tuple[int, ...]
) -> torch.Tensor:
    return (values * weight).sum(dims) / weight.sum(dims).clamp_min(1.0)


class ConnectivityLoss(nn.Module):
    """RetiFluidNet's multi-scale bi-directional connectivity loss.

    At each scale, per class ``k`` (one-hot map ``m_k``, predicted connectivity
    ``c = sigmoid(logits)`` ``[B, K, 8, H, W]``, votes ``v = bilateral_vote(c)``, global map
    ``g = max_k v``)::

        L_k = decouple_weight * BCE(g (1 - e) + (1 - min_k v) e, m_k)     # edge-decoupled map
              + BCE(c, connectivity_target(m_k))                           # 8 channels
              + 1 - Dice(g, m_k)                                           # smooth 1, whole batch

    with ``e`` the edge pixels (foreground pixels with 1 to 7 connected neighbours). The scale's
    loss is ``sum_k L_k`` and the total ``sum_s weights[s] * L^(s)``. BCE means and Dice sums
    run over annotated pixels only: a pixel with ``ignore_index`` counts in no term, and a
    connection to an ignored neighbour is neither scored nor voted on, so ignored pixels get no
    gradient (neighbours outside the image are background, as upstream).

    Args:
        weights: one weight per scale, in the order of ``output.aux[key]`` (upstream: 1, 1, 1/2,
            1/4, 1/8 for decoders 0..4).
        ignore_index: unannotated label.
        decouple_weight: weight of the edge-decoupled term (upstream 0.5).
        edge_from: ``"target"`` (BiconNet: edges of the ground-truth connectivity) or
            ``"prediction"`` (upstream RetiFluidNet: the same rule applied to the predicted
            probabilities, which marks almost every pixel as an edge).
        key: the ``aux`` entry holding the list of connectivity logits.

    Raises:
        ValueError: on an unknown ``edge_from``; (in ``forward``) on a number of scales other
            than the number of weights.
        KeyError: (in ``forward``) if the network returned no ``aux[key]``.
    """

    def __init__(
        self,
        weights: Sequence[float] = (1.0, 1.0, 0.5, 0.25, 0.125),
        ignore_index: int = 255,
        decouple_weight: float = 0.5,
        edge_from: str = "target",
        key: str = "connectivity",
    ) -> None:
        super().__init__()
        if edge_from not in _EDGE_SOURCES:
            raise ValueError(
                f"ConnectivityLoss edge_from={edge_from!r}; expected one of {_EDGE_SOURCES} "
                "(loss.terms.connectivity.edge_from)."
            )
        self.weights = [float(w) for w in weights]
        self.ignore_index = ignore_index
        self.decouple_weight = float(decouple_weight)
        self.edge_from = edge_from
        self.key = key

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        if self.key not in output.aux:
            raise KeyError(
                f"ConnectivityLoss reads output.aux[{self.key!r}], but the network returned only "
                f"{sorted(output.aux)}; pair loss=retifluidnet with model=retifluidnet."
            )
        maps = list(output.aux[self.key])
        if len(maps) != len(self.weights):
            raise ValueError(
                f"ConnectivityLoss got {len(maps)} scales but {len(self.weights)} weights "
                "(loss.terms.connectivity.weights)."
            )
        num_classes = maps[0].shape[1]
        one_hot, valid = masked_one_hot(batch["mask"], num_classes, self.ignore_index)
        target = connectivity_target(one_hot)  # [B, K, 8, H, W]
        # A connection is scored when both ends are annotated (outside the image counts).
        pair_valid = valid.unsqueeze(2) * neighbour_maps(valid, fill=1.0)
        counts = target.sum(dim=2)
        edge_gt = ((counts > 0) & (counts < 8)).float()
        total = one_hot.new_zeros(())
        for weight, logits in zip(self.weights, maps, strict=True):
            total = total + weight * self.scale_loss(
                logits.float(), one_hot, valid, target, pair_valid, edge_gt
            )
        return total

    def scale_loss(
        self,
        logits: torch.Tensor,
        one_hot: torch.Tensor,
        valid: torch.Tensor,
        target: torch.Tensor,
        pair_valid: torch.Tensor,
        edge_gt: torch.Tensor,
    ) -> torch.Tensor:
        """The loss of one scale, summed over classes (see the class docstring)."""
        conn = logits.sigmoid()
        # An ignored neighbour casts no vote (nor receives a gradient through one).
        votes = bilateral_vote(conn) * pair_valid
        glob = votes.amax(dim=2)
        edge = edge_gt
        if self.edge_from == "prediction":
            counts = conn.sum(dim=2)
            edge = ((counts > 0) & (counts < 8)).float()
        decoupled = glob * (1.0 - edge) + (1.0 - votes.amin(dim=2)) * edge
        pixel_dims = (0, 2, 3)
        decouple = _masked_mean(_bce(decoupled, one_hot), valid, pixel_dims)
        direction = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        direction = _masked_mean(direction, pair_valid, (0, 2, 3, 4))
        inter = (glob * one_hot * valid).sum(pixel_dims)
        dice = (2.0 * inter + 1.0) / (
            (glob * valid).sum(pixel_dims) + one_hot.sum(pixel_dims) + 1.0
        )
        per_class = self.decouple_weight * decouple + direction + (1.0 - dice)
        return per_class.sum()
