"""WATNet specifics: the Haar DWT, the wavelet channel attention, per-stage modules, counts."""

from __future__ import annotations

import hydra
import pytest
import torch

from octseg.models.blocks.wavelet import SUBBANDS, HaarDWT, WaveletChannelAttention
from octseg.models.watnet import WATNet
from octseg.profiling import count_parameters as _count
from tests.models.model_checks import (
    ODD_BSCAN_SIZES,
    banded_batch,
    check_odd_size,
    cross_entropy,
    fit_steps,
)


def test_dwt_of_a_constant_image_has_zero_detail_bands() -> None:
    for h, w in [(8, 12), (7, 9)]:  # odd sizes are extended by replication
        bands = HaarDWT()(torch.full((2, 3, h, w), 1.7))
        assert bands.shape == (2, 3, 4, (h + 1) // 2, (w + 1) // 2)
        assert torch.allclose(bands[:, :, 0], torch.full_like(bands[:, :, 0], 2 * 1.7))
        assert bands[:, :, 1:].abs().max() < 1e-6


def test_haar_dwt_is_orthogonal() -> None:
    """Energy is preserved and the four bands are an orthonormal change of basis of each 2x2
    block (random input, so no special structure helps)."""
    x = torch.randn(2, 5, 16, 22, dtype=torch.float64)
    bands = HaarDWT().double()(x)
    torch.testing.assert_close(bands.square().sum(), x.square().sum())
    # Same for any linear combination: inner products are preserved too.
    y = torch.randn_like(x)
    torch.testing.assert_close((HaarDWT().double()(y) * bands).sum(), (x * y).sum())


def test_detail_bands_see_edges_along_the_documented_axis() -> None:
    """HL (high-pass along H) responds to a horizontal edge, LH (along W) to a vertical one."""
    horizontal = torch.zeros(1, 1, 8, 8)
    horizontal[..., 3:, :] = 1.0  # edge between rows 2 and 3, inside a 2x2 block
    vertical = horizontal.transpose(-1, -2)
    bh, bv = HaarDWT()(horizontal)[0, 0], HaarDWT()(vertical)[0, 0]
    hl, lh = SUBBANDS.index("HL"), SUBBANDS.index("LH")
    assert bh[hl].abs().sum() > 0 and bh[lh].abs().sum() == 0
    assert bv[lh].abs().sum() > 0 and bv[hl].abs().sum() == 0


def test_attention_descriptor_uses_the_selected_subbands() -> None:
    x = torch.randn(2, 4, 10, 14)
    bands = HaarDWT()(x)
    for subbands in (["LL"], ["LL", "LH"], ["HL", "HH"]):
        att = WaveletChannelAttention(4, subbands=subbands)
        idx = [SUBBANDS.index(s) for s in subbands]
        expected = bands[:, :, idx].sum(2).mean((-2, -1))
        torch.testing.assert_close(att.descriptor(x), expected)
    # LL alone is 2 x global average pooling (orthonormal Haar on even sizes).
    torch.testing.assert_close(
        WaveletChannelAttention(4, subbands=["LL"]).descriptor(x), 2 * x.mean((-2, -1))
    )


def test_attention_scales_channels_by_the_sigmoid_of_the_fc_output() -> None:
    att = WaveletChannelAttention(6, reduction=2)
    x = torch.randn(3, 6, 8, 8)
    scale = att.fc(att.descriptor(x))
    assert torch.all((scale > 0) & (scale < 1))
    torch.testing.assert_close(att(x), x * scale[:, :, None, None])


def test_attention_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="subbands"):
        WaveletChannelAttention(4, subbands=["LL", "XY"])
    with pytest.raises(ValueError, match="subbands"):
        WaveletChannelAttention(4, subbands=[])
    with pytest.raises(ValueError, match="reduction"):
        WaveletChannelAttention(4, reduction=8)


def test_parameter_counts_of_the_attention_variants() -> None:
    # The seed structure (shared attention) is checked in test_param_counts.py; at 1 channel:
    assert _count(WATNet(1, 4, share_attention=True)) == 26_704_388
    # One module per stage adds the four attention blocks again: sum(C^2 + 1.5 C), C = 64..512.
    assert _count(WATNet(1, 4)) == 26_704_388 + 349_600
    assert _count(WATNet(1, 10)) == 27_054_378


def test_attention_modules_are_per_stage_unless_shared() -> None:
    net = WATNet(1, 4, base_channels=8)
    enc = {id(m) for m in net.enc_attention}
    assert not enc & {id(m) for m in net.dec_attention}
    shared = WATNet(1, 4, base_channels=8, share_attention=True)
    assert [id(m) for m in shared.enc_attention] == [id(m) for m in shared.dec_attention]
    assert sum(isinstance(m, WaveletChannelAttention) for m in net.modules()) == 8


def test_dwt_has_no_parameters_and_its_kernels_follow_the_module() -> None:
    net = WATNet(1, 4, base_channels=8)
    assert not any("kernels" in n for n, _ in net.named_parameters())
    assert not any("kernels" in k for k in net.state_dict())  # constants, not checkpointed
    net = net.double()
    assert all(m.dwt.kernels.dtype == torch.float64 for m in net.enc_attention)


def test_watnet_recipe_composes(make_cfg) -> None:
    cfg = make_cfg("experiment=watnet_duke")
    assert cfg.model.net._target_ == "octseg.models.watnet.WATNet"
    assert cfg.optimizer.lr == 5e-4 and cfg.dataset.datamodule.batch_size == 10
    net = hydra.utils.instantiate(cfg.model.net)
    assert _count(net) == 27_054_378


@pytest.mark.parametrize(("batch", "h", "w"), ODD_BSCAN_SIZES)
def test_odd_bscan_sizes_give_input_size_logits(batch: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    check_odd_size(WATNet(1, 10), batch, h, w, num_classes=10)


def test_overfits_one_tiny_batch() -> None:
    torch.manual_seed(0)
    net = WATNet(1, 3, base_channels=16)
    batch = banded_batch(3, 32, 48, noise=0.1)
    losses = [t["loss"] for t in fit_steps(net, cross_entropy, batch, steps=25, lr=1e-2)]
    assert min(losses[-5:]) < 0.2 * losses[0]
