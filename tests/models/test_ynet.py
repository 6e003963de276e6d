"""Y-Net specifics: non-square FFC, merge modes, float32 FFT under autocast."""

from __future__ import annotations

import hydra
import pytest
import torch

from octseg.models.blocks.ffc import FFCBNAct, SpectralTransform, merge_local_global
from octseg.models.ynet import YNet, _interleave_merge


def test_spectral_transform_accepts_non_square_and_odd_maps() -> None:
    st = SpectralTransform(16, 32).eval()
    for h, w in [(8, 24), (31, 12), (6, 7)]:
        assert st(torch.randn(2, 16, h, w)).shape == (2, 32, h, w)


def test_local_fourier_unit_tiles_by_height_and_width() -> None:
    """Each of the four LFU tiles is (h/2) x (w/2): a map whose quadrants differ only in W
    would be mixed up by the upstream h//2 split of W."""
    st = SpectralTransform(16, 32).eval()
    x = torch.randn(1, 16, 8, 24)
    hidden = st.conv1(x)
    lfu = st._local_fourier(hidden)
    assert lfu.shape == hidden.shape
    # The LFU output repeats with period (h/2, w/2).
    assert torch.allclose(lfu[..., :4, :12], lfu[..., 4:, 12:], atol=1e-5)


def test_ffc_first_stage_has_no_global_input() -> None:
    block = FFCBNAct(1, 32, kernel_size=1, ratio_gin=0.0, ratio_gout=0.5)
    y_l, y_g = block(torch.randn(2, 1, 16, 20))
    assert y_l.shape == (2, 16, 16, 20) and y_g.shape == (2, 16, 16, 20)
    assert block.ffc.convg2g is None and block.ffc.convg2l is None
    assert merge_local_global((y_l, y_g)).shape == (2, 32, 16, 20)


def test_ynet_non_square_input() -> None:
    net = YNet(1, 10).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 64, 160)).shape == (1, 10, 64, 160)


def test_official_interleave_matches_flatten_and_stack() -> None:
    a = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    b = -a
    merged = _interleave_merge(a, b)
    assert merged.shape == (2, 6, 2, 2)
    flat = merged.reshape(-1)
    assert torch.equal(flat[0::2], a.reshape(-1)) and torch.equal(flat[1::2], b.reshape(-1))
    # Not a channel concatenation: spatial alignment is lost.
    assert not torch.equal(merged, torch.cat((a, b), dim=1))


def test_merge_modes_differ_only_in_the_bottleneck_input() -> None:
    torch.manual_seed(0)
    concat = YNet(1, 4, base_channels=8, merge="concat").eval()
    interleave = YNet(1, 4, base_channels=8, merge="official_interleave").eval()
    interleave.load_state_dict(concat.state_dict())
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        assert not torch.allclose(concat(x), interleave(x))


def test_unknown_merge_and_bad_ratio_raise() -> None:
    with pytest.raises(ValueError, match="merge"):
        YNet(1, 4, merge="sum")
    with pytest.raises(ValueError, match="ratio_in"):
        YNet(1, 4, ratio_in=1.0)


def test_dropout_before_the_head_adds_no_parameters_and_is_stochastic_in_training() -> None:
    """EdgeAL's MC dropout: Dropout2d before the head; same weights as the plain Y-Net, the
    identity in eval mode, random channel masks in training mode."""
    plain, mc = YNet(1, 4, base_channels=8), YNet(1, 4, base_channels=8, dropout=0.25)
    assert isinstance(plain.dropout, torch.nn.Identity)
    assert sum(p.numel() for p in mc.parameters()) == sum(p.numel() for p in plain.parameters())
    mc.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(mc.eval()(x), plain.eval()(x))
        mc.dropout.train()
        assert not torch.allclose(mc(x), mc(x))
    with pytest.raises(ValueError, match="model.net.dropout"):
        YNet(1, 4, dropout=1.0)


def test_fft_runs_in_float32_under_bf16_autocast() -> None:
    net = YNet(1, 4, base_channels=8).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(1, 1, 32, 48))
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("experiment", ["ynet_duke", "ynet_noffc_duke"])
def test_paper_recipes_use_the_official_merge(make_cfg, experiment: str) -> None:
    """The paper's numbers come from upstream's interleaving merge; its recipes must use it."""
    cfg = make_cfg(f"experiment={experiment}")
    assert cfg.model.net.merge == "official_interleave"
    net = hydra.utils.instantiate(cfg.model.net)
    assert net.merge == "official_interleave"
