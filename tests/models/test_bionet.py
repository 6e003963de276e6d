"""BioNet: parameter counts against the seed structure, the fused logits, odd sizes, the
biomarker network (per-column output, user-given weights, learning thickness)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from octseg.losses.biomarker import column_thickness, masked_l1
from octseg.models.bionet import BiomarkerNet, BioNet, choroid_lookup, fuse_choroid_logits
from octseg.models.wrappers import PadToDivisor


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts_match_the_seed_structure() -> None:
    """methods.md: GMS 7.70 M, LCS 7.71 M (1 channel, 12 layers), bio 11.18 M. Ours: bias-free
    convolutions before BatchNorm (seed with biases: 7,702,540 and 7,708,802) and a per-column
    head of 32 outputs instead of Linear(512, 1)."""
    net = BioNet(1, 12, choroid_labels=[11])
    gms, lcs, bio = _count(net.gms), _count(net.lcs), _count(BiomarkerNet())
    assert (gms, lcs, bio) == (7_699_724, 7_705_986, 11_192_934)
    for got, seed in ((gms, 7.70e6), (lcs, 7.71e6), (bio, 11.18e6)):
        assert abs(got - seed) / seed < 0.005
    assert _count(BioNet(1, 10)) == 15_404_428  # Duke: 10 labels
    assert net.size_divisor == 8 and net.gms.size_divisor == 8


def test_fused_logits_follow_lcs_for_the_choroid_and_gms_elsewhere() -> None:
    torch.manual_seed(0)
    lookup = choroid_lookup([2, 3], 5)
    gms, lcs = torch.randn(2, 5, 4, 6), torch.randn(2, 2, 4, 6)
    fused = fuse_choroid_logits(gms, lcs, lookup)
    # Argmax: choroid exactly where LCS says so, then GMS's choice inside the group.
    labels = fused.argmax(dim=1)
    choroid = lcs.argmax(dim=1) == 1
    assert torch.equal(torch.isin(labels, torch.tensor([2, 3])), choroid)
    expected = torch.where(
        choroid,
        torch.tensor([2, 3])[gms[:, [2, 3]].argmax(dim=1)],
        torch.tensor([0, 1, 4])[gms[:, [0, 1, 4]].argmax(dim=1)],
    )
    assert torch.equal(labels, expected)
    # Within a group, GMS's proportions; the group's best label has LCS's log-probability.
    ratio = (fused[:, 0] - fused[:, 4]).exp()
    torch.testing.assert_close(ratio, (gms[:, 0] - gms[:, 4]).exp())
    log_p = torch.log_softmax(lcs, dim=1)
    torch.testing.assert_close(fused[:, [2, 3]].max(dim=1).values, log_p[:, 1])
    torch.testing.assert_close(fused[:, [0, 1, 4]].max(dim=1).values, log_p[:, 0])
    # One choroid label: its logit is LCS's log-probability.
    fused1 = fuse_choroid_logits(gms, lcs, choroid_lookup([4], 5))
    torch.testing.assert_close(fused1[:, 4], log_p[:, 1])


@pytest.mark.parametrize(
    ("labels", "match"), [([], "non-empty"), ([8, 8], "unique"), ([10], "0..9"), ([0, 1], "0..1")]
)
def test_bad_choroid_labels_raise(labels: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        choroid_lookup(labels, 2 if match == "0..1" else 10)


@pytest.mark.parametrize(("batch", "h", "w"), [(1, 496, 523), (3, 97, 131)])
def test_any_bscan_size(batch: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    base = 64 if batch == 1 else 16
    net = PadToDivisor(BioNet(1, 10, base_channels=base)).eval()
    bio = BiomarkerNet().eval()
    with torch.no_grad():
        out = net(torch.randn(batch, 1, h, w))
        thickness = bio(out.aux["lcs_logits"].softmax(dim=1)[:, 1:])
    assert out.logits.shape == (batch, 10, h, w)
    assert out.aux["gms_logits"].shape == (batch, 10, h, w)
    assert out.aux["lcs_logits"].shape == (batch, 2, h, w)
    assert thickness.shape == (batch, w)
    assert torch.isfinite(out.logits).all() and torch.isfinite(thickness).all()


def test_biomarker_net_pads_to_32_and_loads_user_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bio = BiomarkerNet().eval()
    x = torch.rand(1, 1, 70, 50)
    padded = torch.zeros(1, 1, 90, 60)
    padded[..., :70, :50] = x
    with torch.no_grad():  # both are zero-padded to the same 96 x 64 map; output cropped to W
        torch.testing.assert_close(bio(x), bio(padded)[:, :50])
        assert bio(x).shape == (1, 50)
    resnet = torchvision.models.resnet18(weights=None)
    file = tmp_path / "resnet18.pt"
    torch.save(resnet.state_dict(), file)
    loaded = BiomarkerNet(weights=str(file))
    torch.testing.assert_close(loaded.trunk.conv1.weight, resnet.conv1.weight)
    torch.testing.assert_close(loaded.trunk.layer4[1].bn2.bias, resnet.layer4[1].bn2.bias)
    with pytest.raises(FileNotFoundError, match="model.biomarker.weights"):
        BiomarkerNet(weights=str(tmp_path / "missing.pt"))
    torch.save({"conv1.weight": resnet.conv1.weight}, file)
    with pytest.raises(ValueError, match="not a ResNet-18"):
        BiomarkerNet(weights=str(file))


def test_biomarker_net_learns_the_thickness_of_a_batch() -> None:
    """Stage A in miniature: L1 to the ground-truth thickness drops on one batch of masks."""
    torch.manual_seed(0)
    rows = torch.arange(64)[:, None]
    tops = torch.stack([20 + 10 * torch.sin(torch.arange(64) / (5.0 + s)) for s in range(4)])
    mask = (rows >= tops.round()[:, None, :]).long()  # [4, 64, 64]: label 1 below a curve
    lookup = torch.tensor([0, 1])
    target, valid = column_thickness(mask, lookup)
    bio = BiomarkerNet().train()
    opt = torch.optim.Adam(bio.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        loss = masked_l1(bio(mask[:, None].float()), target, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.3 * losses[0], losses
