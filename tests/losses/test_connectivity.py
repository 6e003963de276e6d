"""Bi-directional connectivity: targets on hand-checked 3 x 3 maps, bilateral voting, and the
multi-scale connectivity loss against a loop-by-loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from octseg.losses.connectivity import (
    NEIGHBOURS,
    ConnectivityLoss,
    bilateral_vote,
    connectivity_target,
    neighbour_maps,
)
from octseg.models.base import SegOutput

NAMES = ["NW", "N", "NE", "W", "E", "SW", "S", "SE"]
IGNORE = 255


def _channels(conn: torch.Tensor, r: int, c: int) -> set[str]:
    return {NAMES[k] for k in range(8) if conn[k, r, c] > 0}


def test_neighbour_order_is_row_major_and_opposite_channels_mirror() -> None:
    assert NEIGHBOURS[0] == (-1, -1) and NEIGHBOURS[7] == (1, 1)
    for k, (dr, dc) in enumerate(NEIGHBOURS):
        assert NEIGHBOURS[7 - k] == (-dr, -dc)


def test_neighbour_maps_shift_and_fill() -> None:
    x = torch.arange(9.0).view(3, 3)
    maps = neighbour_maps(x, fill=-1.0)
    assert maps.shape == (8, 3, 3)
    # Pixel (1, 1) (value 4) sees all 8 neighbours in row-major order.
    assert maps[:, 1, 1].tolist() == [0, 1, 2, 3, 5, 6, 7, 8]
    # Corner (0, 0): only E (1), S (3) and SE (4) are inside; the rest is the fill value.
    assert maps[:, 0, 0].tolist() == [-1, -1, -1, -1, 1, -1, 3, 4]


def test_connectivity_target_on_a_3x3_mask_by_hand() -> None:
    mask = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    conn = connectivity_target(mask)
    assert conn.shape == (8, 3, 3)
    expected = {
        (0, 0): {"E", "SE"},
        (0, 1): {"W", "S"},
        (1, 1): {"NW", "N", "SE"},
        (2, 2): {"NW"},
    }
    for r in range(3):
        for c in range(3):
            assert _channels(conn, r, c) == expected.get((r, c), set()), (r, c)
    # Every connection is seen from both ends: 4 adjacent foreground pairs, 8 ones.
    assert int(conn.sum()) == 8


def test_connectivity_target_border_counts_outside_as_background() -> None:
    conn = connectivity_target(torch.ones(3, 3))
    assert conn.sum(dim=0).tolist() == [[3, 5, 3], [5, 8, 5], [3, 5, 3]]
    assert _channels(conn, 0, 0) == {"E", "S", "SE"}
    assert _channels(conn, 2, 1) == {"NW", "N", "NE", "W", "E"}


def test_connectivity_target_batches_over_leading_dimensions() -> None:
    masks = (torch.rand(2, 3, 5, 6) > 0.5).float()
    batched = connectivity_target(masks)
    assert batched.shape == (2, 3, 8, 5, 6)
    torch.testing.assert_close(batched[1, 2], connectivity_target(masks[1, 2]))


def test_bilateral_vote_by_hand() -> None:
    conn = torch.zeros(8, 3, 3)
    conn[NAMES.index("E"), 0, 0] = 0.8  # (0, 0) towards its east neighbour (0, 1)
    conn[NAMES.index("W"), 0, 1] = 0.5  # (0, 1) back towards (0, 0)
    conn[NAMES.index("S"), 1, 1] = 0.9  # no answer from (2, 1): no vote
    votes = bilateral_vote(conn)
    assert votes[NAMES.index("E"), 0, 0] == pytest.approx(0.4)
    assert votes[NAMES.index("W"), 0, 1] == pytest.approx(0.4)
    assert int((votes > 0).sum()) == 2


def test_bilateral_vote_is_consistent_in_both_directions() -> None:
    torch.manual_seed(0)
    h, w = 5, 7
    votes = bilateral_vote(torch.rand(2, 8, h, w))
    for k, (dr, dc) in enumerate(NEIGHBOURS):
        for r in range(h):
            for c in range(w):
                q = (r + dr, c + dc)
                if 0 <= q[0] < h and 0 <= q[1] < w:
                    torch.testing.assert_close(votes[:, k, r, c], votes[:, 7 - k, q[0], q[1]])
                else:  # a neighbour outside the image never votes
                    assert (votes[:, k, r, c] == 0).all()


def test_voting_a_true_connectivity_map_returns_it() -> None:
    torch.manual_seed(1)
    target = connectivity_target((torch.rand(4, 9, 11) > 0.4).float())
    torch.testing.assert_close(bilateral_vote(target), target)


# ---------------------------------------------------------------- the loss
# Keras' clipping bound 1 - 1e-7 as float32 holds it (the loss runs in float32).
_UPPER = float(torch.tensor(1 - 1e-7, dtype=torch.float32))


def _bce(p: float, t: float) -> float:
    p = min(max(p, 1e-7), _UPPER)
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def _reference_scale_loss(
    logits: torch.Tensor, mask: torch.Tensor, edge_from: str = "target"
) -> float:
    """The scale loss with plain loops over pixels and directions (one image, no ignore)."""
    k_classes, _, h, w = logits.shape
    prob = logits.sigmoid().tolist()
    total = 0.0
    for k in range(k_classes):
        m = [[1.0 if int(mask[r, c]) == k else 0.0 for c in range(w)] for r in range(h)]
        decouple = direction = inter = glob_sum = 0.0
        for r in range(h):
            for c in range(w):
                votes, targets = [], []
                for d, (dr, dc) in enumerate(NEIGHBOURS):
                    q = (r + dr, c + dc)
                    inside = 0 <= q[0] < h and 0 <= q[1] < w
                    targets.append(m[r][c] * m[q[0]][q[1]] if inside else 0.0)
                    back = prob[k][7 - d][q[0]][q[1]] if inside else 0.0
                    votes.append(prob[k][d][r][c] * back)
                    direction += _bce(prob[k][d][r][c], targets[-1])
                source = targets if edge_from == "target" else [prob[k][d][r][c] for d in range(8)]
                edge = 0.0 < sum(source) < 8.0
                decoupled = 1.0 - min(votes) if edge else max(votes)
                decouple += _bce(decoupled, m[r][c])
                inter += max(votes) * m[r][c]
                glob_sum += max(votes)
        fg = sum(map(sum, m))
        dice = (2 * inter + 1) / (glob_sum + fg + 1)
        total += 0.5 * decouple / (h * w) + direction / (8 * h * w) + 1 - dice
    return total


@pytest.mark.parametrize("edge_from", ["target", "prediction"])
def test_scale_loss_matches_a_loop_reference(edge_from: str) -> None:
    torch.manual_seed(2)
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 2], [2, 2, 1, 0]])
    logits = torch.randn(1, 3, 8, 3, 4) * 2
    loss = ConnectivityLoss(weights=[1.0], edge_from=edge_from)
    got = loss(SegOutput(logits=torch.zeros(1, 3, 3, 4), aux={"connectivity": [logits]}),
               {"mask": mask[None]})  # fmt: skip
    assert float(got) == pytest.approx(_reference_scale_loss(logits[0], mask, edge_from), rel=1e-5)


def test_perfect_connectivity_gives_almost_zero_loss() -> None:
    mask = torch.zeros(1, 6, 7, dtype=torch.long)
    mask[0, 1:4, 2:6] = 1  # a 3 x 4 block: no isolated pixel
    one_hot = torch.stack([mask == 0, mask == 1], dim=1).float()
    logits = 30.0 * (2.0 * connectivity_target(one_hot) - 1.0)
    out = SegOutput(logits=torch.zeros(1, 2, 6, 7), aux={"connectivity": [logits] * 5})
    assert float(ConnectivityLoss()(out, {"mask": mask})) < 1e-6
    wrong = SegOutput(logits=out.logits, aux={"connectivity": [-logits] * 5})
    assert float(ConnectivityLoss()(wrong, {"mask": mask})) > 10.0


def test_scales_are_weighted_1_1_half_quarter_eighth() -> None:
    torch.manual_seed(3)
    mask = torch.randint(0, 3, (2, 8, 9))
    maps = [torch.randn(2, 3, 8, 8, 9) for _ in range(5)]
    single = [
        float(ConnectivityLoss(weights=[1.0])(_conn_output(m), {"mask": mask})) for m in maps
    ]
    total = float(ConnectivityLoss()(_conn_output(*maps), {"mask": mask}))
    expected = sum(w * s for w, s in zip([1, 1, 0.5, 0.25, 0.125], single, strict=True))
    assert total == pytest.approx(expected, rel=1e-6)


def _conn_output(*maps: torch.Tensor) -> SegOutput:
    b, k, _, h, w = maps[0].shape
    return SegOutput(logits=torch.zeros(b, k, h, w), aux={"connectivity": list(maps)})


def test_ignored_pixels_and_their_connections_do_not_count() -> None:
    torch.manual_seed(4)
    mask = torch.randint(0, 2, (1, 6, 6))
    mask[0, :, 4:] = IGNORE
    logits = torch.randn(1, 2, 8, 6, 6, requires_grad=True)
    loss = ConnectivityLoss(weights=[1.0], ignore_index=IGNORE)
    value = loss(_conn_output(logits), {"mask": mask})
    value.backward()
    # Columns 4-5 are ignored; column 3's connections east (NE, E, SE) reach them, except NE
    # of row 0 and SE of row 5, whose neighbours lie outside the image (background).
    grad = logits.grad[0]
    assert (grad[..., 4:] == 0).all()
    assert (grad[:, NAMES.index("E"), :, 3] == 0).all()
    assert (grad[:, NAMES.index("NE"), 1:, 3] == 0).all()
    assert (grad[:, NAMES.index("SE"), :5, 3] == 0).all()
    assert (grad[:, NAMES.index("NE"), 0, 3] != 0).all()
    assert (logits.grad[..., :3] != 0).any()


def test_errors_name_the_setting() -> None:
    with pytest.raises(ValueError, match="edge_from"):
        ConnectivityLoss(edge_from="edges")
    out = _conn_output(torch.zeros(1, 2, 8, 3, 3))
    with pytest.raises(ValueError, match="weights"):
        ConnectivityLoss()(out, {"mask": torch.zeros(1, 3, 3, dtype=torch.long)})
    with pytest.raises(KeyError, match="model=retifluidnet"):
        ConnectivityLoss()(SegOutput(logits=torch.zeros(1, 2, 3, 3)), {"mask": None})
