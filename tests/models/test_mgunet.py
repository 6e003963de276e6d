"""TS-MGU-Net specifics: parameter counts, the GloRe unit, stage masking and fusion, training."""

from __future__ import annotations

import pytest
import torch

from octseg.losses import DiceCELoss, Objective
from octseg.losses.auxiliary import AuxiliaryLoss
from octseg.models.blocks.graph import GloReUnit, GraphConv
from octseg.models.mgunet import MGUNet, MGUNetStage, fuse_stage_logits, mask_to_retina
from octseg.models.wrappers import PadToDivisor
from octseg.profiling import count_parameters as _count
from tests.models.model_checks import ODD_BSCAN_SIZES, banded_batch, check_odd_size, fit_steps

DUKE_MAP = [0, 1, 1, 1, 1, 1, 1, 1, 0, 1]
OFFICIAL_MAP = [0] + [1] * 9 + [2]  # background, 9 layers (incl. choroid), disc


def test_parameter_counts_match_the_official_structure() -> None:
    """methods.md: official stage 1 2.30 M + stage 2 2.09 M (1 channel, 3 and 10 classes)."""
    net = MGUNet(1, 11, stage1_map=OFFICIAL_MAP)
    stage1, stage2 = _count(net.stage1), _count(net.stage2)
    assert stage1 == 2_298_483 and stage2 == 2_093_802
    assert abs(stage1 - 2.30e6) / 2.30e6 < 0.005
    assert abs(stage2 - 2.09e6) / 2.09e6 < 0.005
    assert _count(net) == stage1 + stage2  # the fusion has no parameters
    # Duke: no disc, so stage 1 has 2 classes (one 1x1 output channel less: 16 + 1).
    assert _count(MGUNet(1, 10, stage1_map=DUKE_MAP)) == stage1 + stage2 - 17


def test_stage_structure() -> None:
    net = MGUNet(1, 11, stage1_map=OFFICIAL_MAP)
    assert net.stage1.pools == (2, 4, 4) and net.stage2.pools == (2, 2, 2)
    assert net.stage1.head.out_channels == 3 and net.stage2.head.out_channels == 10
    ups = [(u.kernel_size, u.stride) for u in net.stage1.ups]
    assert ups == [((4, 4), (2, 2)), ((6, 6), (4, 4)), ((6, 6), (4, 4))]
    glore = [m for m in net.stage2.mgr.modules() if isinstance(m, GloReUnit)]
    assert [g.num_n for g in glore] == [128, 128, 64, 64]

    # The MGR branch convolutions and the decoder carry no BatchNorm (upstream).
    def has_bn(module: torch.nn.Module) -> bool:
        return any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())

    assert not has_bn(net.stage2.decoders)
    assert not any(has_bn(branch[0]) for branch in net.stage2.mgr.branches)
    assert not has_bn(net.stage2.mgr.fuse) and has_bn(net.stage2.encoders)


def test_glore_unit_shapes_and_graph_reasoning() -> None:
    torch.manual_seed(0)
    unit = GloReUnit(num_in=12, num_mid=4).eval()
    x = torch.randn(2, 12, 7, 9)
    nodes = unit.project(x)
    assert nodes.shape == (2, 8, 4)  # [B, state = 2 * mid, nodes = mid]
    # Projection = pixel states times projection weights, averaged over pixels.
    state = unit.conv_state(x).flatten(2)
    proj = unit.conv_proj(x).flatten(2)
    torch.testing.assert_close(nodes, state @ proj.transpose(1, 2) / 63)
    assert unit(x).shape == x.shape
    # Global: changing one corner pixel changes the output at the opposite corner.
    y = x.clone()
    y[..., 0, 0] += 5.0
    with torch.no_grad():
        assert not torch.allclose(unit(x)[..., -1, -1], unit(y)[..., -1, -1])
    # Residual: with the output BatchNorm's scale and shift at 0, the unit is the identity.
    with torch.no_grad():
        unit.bn.weight.zero_()
        unit.bn.bias.zero_()
        torch.testing.assert_close(unit(x), x)


def test_graph_conv_adds_identity_and_mixes_nodes() -> None:
    gcn = GraphConv(num_state=3, num_node=4)
    with torch.no_grad():
        gcn.adjacency.weight.zero_()
        gcn.adjacency.bias.zero_()
        gcn.weight.weight.copy_(torch.eye(3)[:, :, None])
    v = torch.randn(1, 3, 4)
    # Zero adjacency: A + I = I, so the layer is LeakyReLU(v).
    torch.testing.assert_close(gcn(v), torch.nn.functional.leaky_relu(v, 0.2))
    with torch.no_grad():
        gcn.adjacency.weight.fill_(1.0)  # every node receives the sum of all nodes
    expected = torch.nn.functional.leaky_relu(v + v.sum(dim=2, keepdim=True), 0.2)
    torch.testing.assert_close(gcn(v), expected)


def test_mask_keeps_only_stage1_retina_pixels() -> None:
    image = torch.arange(1.0, 7.0).view(1, 1, 2, 3)
    logits = torch.zeros(1, 3, 2, 3)
    logits[0, 0, 0, 0] = 5  # background
    logits[0, 1, 0, 1:] = 5  # retina
    logits[0, 1, 1, :2] = 5
    logits[0, 2, 1, 2] = 5  # disc
    expected = torch.tensor([[[[0.0, 2.0, 3.0], [4.0, 5.0, 0.0]]]])
    assert torch.equal(mask_to_retina(image, logits), expected)


def test_stage2_sees_the_masked_image_without_gradient_to_stage1() -> None:
    torch.manual_seed(0)
    net = MGUNet(1, 10, stage1_map=DUKE_MAP).train()
    seen = {}
    net.stage2.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0]))
    x = torch.randn(2, 1, 160, 160)
    out = net(x)
    retina = out.aux["stage1_logits"].argmax(dim=1, keepdim=True) == 1
    assert torch.equal(seen["x"], x * retina)
    out.aux["stage2_logits"].sum().backward()
    assert all(p.grad is None for p in net.stage1.parameters())
    assert all(p.grad is not None for p in net.stage2.parameters())


def test_fusion_with_one_background_and_a_disc_is_upstreams() -> None:
    s1, s2 = torch.randn(2, 3, 4, 5), torch.randn(2, 10, 4, 5)
    fused = fuse_stage_logits(s1, s2, OFFICIAL_MAP)
    assert fused.shape == (2, 11, 4, 5)
    assert torch.equal(fused[:, 0], s1[:, 0])  # background from stage 1
    assert torch.equal(fused[:, 1:10], s2[:, 1:10])  # layers from stage 2
    assert torch.equal(fused[:, 10], s1[:, 2])  # disc from stage 1


def test_fusion_splits_several_background_labels_by_stage2() -> None:
    s1, s2 = torch.randn(2, 2, 4, 5), torch.randn(2, 10, 4, 5)
    fused = fuse_stage_logits(s1, s2, DUKE_MAP)
    retina = [1, 2, 3, 4, 5, 6, 7, 9]
    assert torch.equal(fused[:, retina], s2[:, retina])
    # The background labels share stage 1's background logit in stage 2's proportions.
    torch.testing.assert_close(torch.logsumexp(fused[:, [0, 8]], dim=1), s1[:, 0])
    ratio = (fused[:, 0] - fused[:, 8]).exp()
    torch.testing.assert_close(ratio, (s2[:, 0] - s2[:, 8]).exp())


@pytest.mark.parametrize(
    ("stage1_map", "match"),
    [
        ([0, 1, 1], "num_classes"),
        ([0, 0, 0, 0], "retina"),
        ([0, 1, 3, 1], "without gaps"),
        ([0, 1, 2, 2], "exactly one"),
    ],
)
def test_bad_stage1_map_raises(stage1_map: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MGUNet(1, 4, stage1_map=stage1_map)


@pytest.mark.parametrize(("batch", "h", "w"), ODD_BSCAN_SIZES)
def test_any_bscan_size(batch: int, h: int, w: int) -> None:
    out = check_odd_size(MGUNet(1, 10, stage1_map=DUKE_MAP), batch, h, w, num_classes=10)
    assert out.aux["stage1_logits"].shape == (batch, 2, h, w)
    assert out.aux["stage2_logits"].shape == (batch, 10, h, w)


def test_stage_needs_its_divisor() -> None:
    assert MGUNetStage(1, 3, (2, 4, 4)).size_divisor == 32
    assert MGUNetStage(1, 10, (2, 2, 2)).size_divisor == 8


def _mgunet_objective() -> Objective:
    """conf/loss/mgunet.yaml: 2 x fused (CE + Dice) + stage 1 (CE + Dice), no background Dice."""
    term = dict(include_background=False, batch_dice=True)
    return Objective(
        {
            "fused": DiceCELoss(**term),
            "stage1": AuxiliaryLoss(DiceCELoss(**term), "stage1_logits", "stage1_target_map"),
        },
        {"fused": 2.0, "stage1": 1.0},
    )


def test_overfits_one_batch_with_the_two_stage_loss() -> None:
    torch.manual_seed(0)
    net = PadToDivisor(MGUNet(1, 10, stage1_map=DUKE_MAP, base_channels=8))
    batch = banded_batch(10, 40, 36, shifts=(0, 3))
    losses = fit_steps(net, _mgunet_objective(), batch, steps=25, lr=3e-3)
    assert set(losses[0]) == {"loss", "fused", "stage1"}
    assert min(v["loss"] for v in losses[-5:]) < 0.7 * losses[0]["loss"]
    assert min(v["stage1"] for v in losses[-5:]) < 0.7 * losses[0]["stage1"]


def test_experiment_config_wires_the_two_stage_loss(make_cfg) -> None:
    """experiment=mgunet_duke: the module's step returns the weighted stage-1 and fused terms."""
    import hydra

    cfg = make_cfg("experiment=mgunet_duke", "dataset=synthetic_small", "augmentation=none")
    assert cfg.optimizer.lr == 1e-3 and list(cfg.optimizer.betas) == [0.9, 0.99]
    assert cfg.loss.weights.fused == 2.0 and cfg.loss.weights.stage1 == 1.0
    module = hydra.utils.instantiate(cfg.model).train()
    torch.manual_seed(0)
    mask = torch.randint(0, 10, (2, 48, 40))
    _, terms = module.model_step({"image": torch.randn(2, 1, 48, 40), "mask": mask})
    torch.testing.assert_close(terms["loss"], 2.0 * terms["fused"] + terms["stage1"])
