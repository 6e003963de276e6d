"""TS-MGU-Net: multi-scale GCN-assisted two-stage U-Net for retinal layers (and the optic disc).

Li J., Jin P., Zhu J., Zou H., Xu X., Tang M., Zhou M., Gan Y., He J., Ling Y., Su Y.,
"Multi-scale GCN-assisted two-stage network for joint segmentation of retinal layers and discs
in peripapillary OCT images", Biomed. Opt. Express 12(4):2204-2220, 2021,
doi:10.1364/BOE.417212. Official code: ``Jiaxuan-Li/MGU-Net`` (``TSMGUNet``); this file is
written from the paper's description and a reading of that code.

Structure. Two U-Nets with filters 16-32-64-128 (``feature_scale`` 4) and a multi-scale global
reasoning (MGR) module between encoder and decoder; both stages are trained jointly as one
network:

* **Stage 1** (pools 2, 4, 4; 3x3 conv + BN + ReLU pairs in the encoder, bias-free-BN-free
  decoder pairs, transposed-convolution upsampling with kernel ``s + 2``, stride ``s``) segments
  {background, retina, disc}.
* The image with the pixels that stage 1 labels background or disc (argmax, no gradient) set to
  0 goes through **stage 2** (pools 2, 2, 2), which segments every label except the disc.
* **Fusion**: the background and disc logits come from stage 1, the layer logits from stage 2.
* **MGR module**: four branches (no pooling, max-pool 2, 3, 5), each ``conv3x3 + ReLU`` (and after
  pooling a second one) followed by a :class:`~octseg.models.blocks.graph.GloReUnit` (128 nodes
  for the first two branches, 64 for the others), upsampled bilinearly, concatenated and reduced
  by a ``1x1`` conv + ReLU.

Parameters (official structure, 1 input channel, 11 classes): stage 1 2,298,483 and stage 2
2,093,802, 4,392,285 in all (2.30 M + 2.09 M as counted on the official code; checked by
``tests/models/test_mgunet.py``). With Duke's 10 labels and no disc: 4,392,268.

Dataset adaptation (``stage1_map``): each label's stage-1 class (0 background, 1 retina,
2.. disc-like regions removed before stage 2). Official peripapillary data:
``[0, 1 x 9, 2]`` (background, nine layers incl. choroid, disc). Duke DME and the synthetic data
have no disc; OCTSeg's configs use ``[0, 1, 1, 1, 1, 1, 1, 1, 0, 1]``: background = the regions
above the first and below the last retinal layer (vitreous, label 0, and the region below
Bruch's membrane, label 8), retina = the seven layers and fluid.

Deviations from the official code:

* **Several background labels.** Upstream has one background label, whose fused logit is
  stage 1's background logit. Where ``stage1_map`` puts several labels in the background
  (Duke: vitreous and below-BM), each gets stage 1's background logit plus stage 2's
  log-probability of that label among the background labels, i.e.
  ``p(label) = p1(background) * p2(label | background)``; with one background label this is
  exactly upstream's fusion.
* Disc-like classes (stage-1 classes >= 2) hold exactly one label each (upstream: one disc).
* Returns raw fused logits in a :class:`~octseg.models.base.SegOutput` with
  ``aux["stage1_logits"]``, ``aux["stage2_logits"]`` and ``aux["stage1_target_map"]`` (the
  label -> stage-1 class lookup the stage-1 loss term uses); upstream returns log-softmax
  outputs and remaps the labels in its training script.
* The masked image is built without upstream's in-place write into a deep copy of the input.
* Weights: Kaiming-normal (fan-in) convolutions and BatchNorm weights drawn from N(1, 0.02), the
  usual ``init_weights(..., 'kaiming')`` that upstream imports (that file is missing from the
  repository); GCN ``Conv1d`` layers keep PyTorch's default, as upstream.
* Any ``H x W`` through :class:`~octseg.models.wrappers.PadToDivisor`: stage 1 needs multiples of
  32 and at least 160 x 160 (the pool-5 MGR branch at 1/32). In training mode BatchNorm on that
  branch needs more than one value: at 160 x 160 a batch of 2 (Duke B-scans give a 3 x 3 map).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from octseg.models.base import SegOutput
from octseg.models.blocks.graph import GloReUnit
from octseg.models.blocks.init import init_weights

__all__ = ["MGUNet", "MGUNetStage", "MGRModule", "mask_to_retina", "fuse_stage_logits"]


def _conv_pair(in_channels: int, out_channels: int, batchnorm: bool) -> nn.Sequential:
    """``(conv3x3 (bias) [-> BN] -> ReLU) x 2``, upstream's ``UnetConv``."""
    layers: list[nn.Module] = []
    for c_in in (in_channels, out_channels):
        layers.append(nn.Conv2d(c_in, out_channels, kernel_size=3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _conv_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """``conv (bias) -> ReLU``, upstream's ``Basconv`` as the MGR module calls it (no BN)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.ReLU(inplace=True),
    )


class MGRModule(nn.Module):
    """Multi-scale global reasoning: four GloRe branches at full, 1/2, 1/3 and 1/5 resolution.

    Args:
        in_channels: input (and output) channels.
        mid_channels: channels inside the branches.
    """

    pools = (1, 2, 3, 5)

    def __init__(self, in_channels: int, mid_channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList()
        for pool in self.pools:
            layers: list[nn.Module] = [_conv_relu(in_channels, mid_channels)]
            if pool > 1:
                layers += [nn.MaxPool2d(pool, stride=pool), _conv_relu(mid_channels, mid_channels)]
            # The two coarsest branches reason over half as many nodes (upstream).
            nodes = mid_channels if pool <= 2 else mid_channels // 2
            layers.append(GloReUnit(mid_channels, nodes))
            self.branches.append(nn.Sequential(*layers))
        self.fuse = _conv_relu(len(self.pools) * mid_channels, in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``; H and W at least 5 (the pool-5 branch)."""
        size = x.shape[-2:]
        outs = []
        for branch in self.branches:
            y = branch(x)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=True)
            outs.append(y)
        return self.fuse(torch.cat(outs, dim=1))


class MGUNetStage(nn.Module):
    """One MGU-Net: a three-level U-Net with an MGR module before its bottleneck.

    Args:
        in_channels: image channels.
        num_classes: output classes.
        pools: the three encoder pooling factors (stage 1: ``(2, 4, 4)``; stage 2: ``(2, 2, 2)``).
        base_channels: channels of the first level (upstream: 64 / feature_scale 4 = 16).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        pools: Sequence[int] = (2, 2, 2),
        base_channels: int = 16,
    ) -> None:
        super().__init__()
        if len(pools) != 3:
            raise ValueError(f"MGUNetStage needs three pooling factors, got {list(pools)}.")
        self.pools = tuple(int(p) for p in pools)
        f = [base_channels * 2**i for i in range(4)]
        self.encoders = nn.ModuleList(
            [
                _conv_pair(c_in, c_out, batchnorm=True)
                for c_in, c_out in zip([in_channels, *f], f[:3], strict=False)
            ]
        )
        self.mgr = MGRModule(f[2], f[3])
        self.center = _conv_pair(f[2], f[3], batchnorm=True)
        # ups[i] brings level i + 1 up to level i: kernel s + 2, stride s, padding 1 -> x s.
        self.ups = nn.ModuleList(
            [
                nn.ConvTranspose2d(f[i + 1], f[i], kernel_size=p + 2, stride=p, padding=1)
                for i, p in enumerate(self.pools)
            ]
        )
        self.decoders = nn.ModuleList(
            [_conv_pair(2 * f[i], f[i], batchnorm=False) for i in range(3)]
        )
        self.head = nn.Conv2d(f[0], num_classes, kernel_size=1)

    @property
    def size_divisor(self) -> int:
        return self.pools[0] * self.pools[1] * self.pools[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, K, H, W]`` logits; H, W multiples of the pooling product."""
        skips = []
        for encoder, pool in zip(self.encoders, self.pools, strict=False):
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, pool)
        x = self.center(self.mgr(x))
        for level in reversed(range(3)):
            x = self.decoders[level](torch.cat((self.ups[level](x), skips[level]), dim=1))
        return self.head(x)


def mask_to_retina(image: torch.Tensor, stage1_logits: torch.Tensor) -> torch.Tensor:
    """Stage 2's input: ``image`` with every pixel that stage 1 does not call retina set to 0.

    The mask is the argmax of the stage-1 logits (class 1 = retina), so no gradient flows
    through it (as upstream's ``img2df``).
    """
    retina = (stage1_logits.detach().argmax(dim=1, keepdim=True) == 1).to(image.dtype)
    return image * retina


def fuse_stage_logits(
    stage1: torch.Tensor,
    stage2: torch.Tensor,
    stage1_map: Sequence[int],
) -> torch.Tensor:
    """Fused logits ``[B, K, H, W]`` from stage 1 ``[B, S, H, W]`` and stage 2 ``[B, K2, H, W]``.

    Stage 2's channels are the labels whose stage-1 class is 0 or 1, in label order. Retina
    labels take stage 2's logit; a disc-like label (stage-1 class >= 2) takes its stage-1
    logit; background labels take stage 1's background logit, plus, when there are several,
    stage 2's log-probability of the label among them.
    """
    stage2_labels = [k for k, g in enumerate(stage1_map) if g <= 1]
    channel = {label: i for i, label in enumerate(stage2_labels)}
    background = [k for k, g in enumerate(stage1_map) if g == 0]
    if len(background) > 1:
        split = torch.log_softmax(stage2[:, [channel[k] for k in background]].float(), dim=1)
        split = split.to(stage1.dtype)
    columns = []
    for label, group in enumerate(stage1_map):
        if group == 1:
            columns.append(stage2[:, channel[label]])
        elif group >= 2:
            columns.append(stage1[:, group])
        elif len(background) == 1:
            columns.append(stage1[:, 0])
        else:
            columns.append(stage1[:, 0] + split[:, background.index(label)])
    return torch.stack(columns, dim=1)


def _validate_stage1_map(stage1_map: Sequence[int], num_classes: int) -> list[int]:
    groups = [int(g) for g in stage1_map]
    hint = (
        "Set model.net.stage1_map to each label's stage-1 class (0 background, 1 retina, "
        "2.. disc-like regions), e.g. [0, 1, 1, 1, 1, 1, 1, 1, 0, 1] for Duke DME."
    )
    if len(groups) != num_classes:
        raise ValueError(
            f"MGUNet stage1_map has {len(groups)} entries but num_classes={num_classes}. {hint}"
        )
    present = sorted(set(groups))
    if present[0] != 0 or present != list(range(len(present))) or len(present) < 2:
        raise ValueError(
            f"MGUNet stage1_map={groups} must use the stage-1 classes 0, 1, ... without gaps, "
            f"with background (0) and retina (1) present. {hint}"
        )
    for g in present[2:]:
        if groups.count(g) != 1:
            raise ValueError(
                f"MGUNet stage1_map={groups}: disc-like stage-1 class {g} must hold exactly one "
                f"label (it has {groups.count(g)}). {hint}"
            )
    return groups


class MGUNet(nn.Module):
    """Two-stage MGU-Net (TS-MGU-Net) returning fused logits and both stages' logits.

    Args:
        in_channels: image channels (1 for OCT).
        num_classes: fused output classes, background included.
        stage1_map: stage-1 class of every label (length ``num_classes``): 0 background,
            1 retina, 2.. one disc-like region each. Default: label 0 background, all others
            retina.
        base_channels: channels of the first U-Net level (upstream: 16).

    Raises:
        ValueError: if ``stage1_map`` does not fit ``num_classes`` or skips a stage-1 class.

    Examples::

        >>> net = MGUNet(1, 10, stage1_map=[0, 1, 1, 1, 1, 1, 1, 1, 0, 1])
        >>> out = net(torch.zeros(2, 1, 160, 192))
        >>> out.logits.shape, out.aux["stage1_logits"].shape
        (torch.Size([2, 10, 160, 192]), torch.Size([2, 2, 160, 192]))
    """

    size_divisor = 32
    requires_square = False
    min_hw = (160, 160)

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        stage1_map: Sequence[int] | None = None,
        base_channels: int = 16,
    ) -> None:
        super().__init__()
        if stage1_map is None:
            stage1_map = [0] + [1] * (num_classes - 1)
        self.stage1_map = _validate_stage1_map(stage1_map, num_classes)
        num_stage1 = max(self.stage1_map) + 1
        num_stage2 = sum(g <= 1 for g in self.stage1_map)
        self.stage1 = MGUNetStage(in_channels, num_stage1, (2, 4, 4), base_channels)
        self.stage2 = MGUNetStage(in_channels, num_stage2, (2, 2, 2), base_channels)
        self.register_buffer(
            "stage1_target_map", torch.tensor(self.stage1_map, dtype=torch.long), persistent=False
        )
        init_weights(self, "kaiming_normal_fan_in")

    def forward(self, x: torch.Tensor) -> SegOutput:
        """``[B, C_in, H, W] -> SegOutput`` (fused logits ``[B, K, H, W]``); H, W multiples of
        32, at least 160."""
        stage1 = self.stage1(x)
        stage2 = self.stage2(mask_to_retina(x, stage1))
        return SegOutput(
            logits=fuse_stage_logits(stage1, stage2, self.stage1_map),
            aux={
                "stage1_logits": stage1,
                "stage2_logits": stage2,
                "stage1_target_map": self.stage1_target_map,
            },
        )
