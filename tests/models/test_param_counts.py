"""Exact parameter counts of the paper methods against their official code's structure."""

from __future__ import annotations

import pytest
import torch

from octseg.models.lightreseg import LightReSeg
from octseg.models.relaynet import ReLayNet
from octseg.models.unet import UNet
from octseg.models.watnet import WATNet
from octseg.models.ynet import YNet


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        # azadef/ynet networks.py UNet(1, 9): 7,762,729 (Y-Net paper's U-Net baseline).
        (lambda: UNet(in_channels=1, num_classes=9), 7_762_729),
        # azadef/ynet YNet_general(1, 9, ffc=True, ratio_in=0.5): 6,925,353.
        (lambda: YNet(in_channels=1, num_classes=9, ffc=True), 6_925_353),
        # YNet_general(ffc=False): the same structure with a second spatial encoder (7.46 M).
        (lambda: YNet(in_channels=1, num_classes=9, ffc=False), 7_459_785),
        # YNet_general(ffc=True, skip_ffc=True) (7.41 M).
        (lambda: YNet(in_channels=1, num_classes=9, ffc=True, skip_ffc=True), 7_413_801),
        # ai-med/relaynet_pytorch ReLayNet, 10 classes: 1,537 + 3 x 86,209 + 3 x 172,225 + 650.
        (lambda: ReLayNet(in_channels=1, num_classes=10), 777_489),
        # Medical-Image-Analysis/LightReSeg LightReSeg(1, 9) with its ReLU+BN head: 3,306,955.
        (lambda: LightReSeg(in_channels=1, num_classes=9, head="official"), 3_306_955),
        # No official WATNet code: the seed WAT_SegNet_2022.WATNet (3 channels, 4 classes, encoder
        # attention reused in the decoder): 26,704,964 (methods.md §3.9: 26.70 M).
        (lambda: WATNet(in_channels=3, num_classes=4, share_attention=True), 26_704_964),
    ],
    ids=["unet", "ynet_ffc", "ynet_noffc", "ynet_skip_ffc", "relaynet", "lightreseg", "watnet"],
)
def test_official_parameter_counts(factory, expected: int) -> None:
    assert _count(factory()) == expected


def test_merge_mode_does_not_change_parameters() -> None:
    concat = YNet(1, 9, merge="concat")
    interleave = YNet(1, 9, merge="official_interleave")
    assert _count(concat) == _count(interleave) == 6_925_353


def test_relaynet_uses_7x3_kernels_and_unpooling() -> None:
    net = ReLayNet(1, 10)
    kernels = {m.kernel_size for m in net.modules() if isinstance(m, torch.nn.Conv2d)}
    assert kernels == {(7, 3), (1, 1)}
    assert any(isinstance(m, torch.nn.MaxUnpool2d) for m in net.modules())
    assert sum(isinstance(m, torch.nn.PReLU) for m in net.modules()) == 7
