"""LightReSeg specifics: size-adaptive position embeddings, heads, attention blocks, counts."""

from __future__ import annotations

import hydra
import pytest
import torch
import torch.nn.functional as F

from octseg.models.blocks.transformer import GridPositionEmbedding
from octseg.models.lightreseg import ChannelSelfAttention, LightReSeg, StripConvAttention
from octseg.profiling import count_parameters as _count
from tests.models.model_checks import (
    ODD_BSCAN_SIZES,
    banded_batch,
    check_odd_size,
    cross_entropy,
    fit_steps,
)


def test_parameter_counts_of_the_parts() -> None:
    # The whole official structure is checked in test_param_counts.py (3,306,955 at 9 classes);
    # methods.md §3.4: transformer 1.38 M, position table 1445 x 128.
    net = LightReSeg(1, 9, head="official")
    assert _count(net.transformer) == 1_380_864
    assert _count(net.pos) == 1445 * 128
    assert _count(LightReSeg(1, 10)) == 3_306_954


def test_two_input_sizes_work_with_the_same_weights() -> None:
    torch.manual_seed(0)
    net = LightReSeg(1, 5).eval()
    with torch.no_grad():
        for h, w in [(64, 96), (496, 128), (608, 608)]:  # 608 = the stored 38 x 38 grid
            out = net(torch.randn(1, 1, h, w))
            assert out.shape == (1, 5, h, w) and torch.isfinite(out).all()


def test_position_embedding_resizes_its_grid_to_the_token_grid() -> None:
    pos = GridPositionEmbedding(4, (6, 8))
    same = pos((6, 8))
    assert same.shape == (1, 1 + 48, 4)
    torch.testing.assert_close(same[0, 1:], pos.grid[0].flatten(1).T)  # raster order, no resize
    torch.testing.assert_close(same[0, :1], pos.cls[0])
    assert pos((3, 13)).shape == (1, 1 + 39, 4)
    with torch.no_grad():
        pos.grid.fill_(2.5)  # a constant grid stays constant at any size
    torch.testing.assert_close(pos((5, 7))[0, 1:], torch.full((35, 4), 2.5))


def test_official_head_option_changes_the_head() -> None:
    torch.manual_seed(0)
    plain = LightReSeg(1, 6).eval()
    official = LightReSeg(1, 6, head="official").eval()
    assert [type(m) for m in plain.head] == [torch.nn.Conv2d]
    assert [type(m) for m in official.head] == [
        torch.nn.Conv2d,
        torch.nn.ReLU,
        torch.nn.BatchNorm2d,
    ]
    assert _count(official) - _count(plain) == 2 * 6
    missing, unexpected = official.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("head.2.") for k in missing)
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        logits, bounded = plain(x), official(x)
    assert logits.min() < 0  # raw logits take any sign
    # Fresh BatchNorm in eval mode: relu(logits) / sqrt(1 + eps).
    torch.testing.assert_close(bounded, F.relu(logits) / (1 + 1e-5) ** 0.5)
    with pytest.raises(ValueError, match="head"):
        LightReSeg(1, 6, head="softmax")


def test_channel_self_attention_on_a_hand_built_case() -> None:
    ca = ChannelSelfAttention()
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # B=1, C=2, H=1, W=2
    torch.testing.assert_close(ca(x), x)  # gamma starts at 0: identity
    with torch.no_grad():
        ca.gamma.fill_(1.0)
    # Gram matrix E = [[1, 0], [0, 4]]; max(E) - E per row = [[0, 1], [4, 0]].
    attn = torch.tensor([[0.0, 1.0], [4.0, 0.0]]).softmax(-1)
    expected = x + (attn @ x.reshape(2, 2)).reshape(1, 2, 1, 2)
    torch.testing.assert_close(ca(x), expected)


def test_strip_conv_attention_uses_the_asymmetric_depthwise_kernels() -> None:
    block = StripConvAttention(8)
    kernels = sorted(m.kernel_size for m in block.modules() if isinstance(m, torch.nn.Conv2d))
    assert kernels == sorted([(5, 5), (1, 7), (7, 1), (1, 11), (11, 1), (1, 3), (3, 1), (1, 1)])
    convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.groups == 8 for m in convs if m.kernel_size != (1, 1))
    x = torch.randn(2, 8, 12, 20)
    assert block(x).shape == x.shape


def test_attention_is_finite_under_bf16_autocast() -> None:
    net = LightReSeg(1, 4).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(10 * torch.randn(1, 1, 64, 80))
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize(("batch", "h", "w"), ODD_BSCAN_SIZES)
def test_odd_bscan_sizes_give_input_size_logits(batch: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    check_odd_size(LightReSeg(1, 10), batch, h, w, num_classes=10)


def test_overfits_one_tiny_batch() -> None:
    torch.manual_seed(0)
    net = LightReSeg(1, 3, token_dropout=0.0)
    batch = banded_batch(3, 32, 48, noise=0.1)
    losses = [t["loss"] for t in fit_steps(net, cross_entropy, batch, steps=25, lr=1e-2)]
    assert min(losses[-5:]) < 0.2 * losses[0]


def test_lightreseg_recipe_composes(make_cfg) -> None:
    cfg = make_cfg("experiment=lightreseg_duke")
    assert cfg.model.net.head == "linear" and cfg.optimizer.lr == 5e-4
    assert _count(hydra.utils.instantiate(cfg.model.net)) == 3_306_954
