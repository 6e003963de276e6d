"""nnU-Net-style 2-D configuration on MONAI's ``DynUNet``.

Isensee F., Jaeger P.F., Kohl S.A.A., Petersen J., Maier-Hein K.H., "nnU-Net: a self-configuring
method for deep learning-based biomedical image segmentation", Nature Methods 18:203-211, 2021.
:func:`plan_2d` re-derives the network topology the way nnU-Net v2's experiment planner does
(``get_pool_and_conv_props``: pool an axis only while its spacing is within 2x of the finest
spacing and its feature map stays >= 2 x ``min_feature_map_size``; 3-wide kernels once an axis is
within 2x of the finest spacing; patch padded to the pooling divisor; features doubling from 32
up to 512; batch size capped so that one batch holds at most 5 % of the training voxels, at least
2). Written from the paper and a reading of nnU-Net v2 (``MIC-DKFZ/nnUNet``); no code copied.

For Duke DME (median B-scan 496 x 523 after the column crop, spacing 3.87 um axial x 11.3 um
lateral) it gives 8 stages, strides ``[1,1],[2,1],[2,2] x 6``, kernels ``[3,1],[3,3] x 7``,
patch 512 x 576 and features 32..512 (see ``tests/models/test_nnunet_style.py``).

Differences from running nnU-Net itself are listed in ``docs/models.md``; for the network: MONAI's
convolutions in ``UnetBasicBlock`` have no bias (nnU-Net's do), and the GPU-memory-based part of
the batch-size rule is not modelled (for Duke the 5 % rule binds first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.nets import DynUNet
from torch import nn

from octseg.models.base import SegOutput

__all__ = ["NnUNetPlan2D", "plan_2d", "NnUNetStyleDynUNet"]


@dataclass(frozen=True)
class NnUNetPlan2D:
    """A 2-D nnU-Net-style plan.

    Attributes:
        patch_size: ``(H, W)`` of the training patch, padded to the pooling divisor.
        strides: per stage, the ``(H, W)`` stride (first stage ``(1, 1)``).
        kernel_sizes: per stage, the ``(H, W)`` kernel.
        filters: per stage, the feature channels.
        divisor: per axis, the product of the strides.
        batch_size: training batch size (``None`` when the dataset size is not given).
    """

    patch_size: tuple[int, int]
    strides: tuple[tuple[int, int], ...]
    kernel_sizes: tuple[tuple[int, int], ...]
    filters: tuple[int, ...]
    divisor: tuple[int, int]
    batch_size: int | None


def plan_2d(
    median_shape: Sequence[int],
    spacing: Sequence[float],
    min_feature_map_size: int = 4,
    base_features: int = 32,
    max_features: int = 512,
    num_training_pixels: int | None = None,
    max_batch_size: int = 12,
    min_batch_size: int = 2,
) -> NnUNetPlan2D:
    """Derives nnU-Net v2's 2-D topology and batch size for images of ``median_shape``.

    Args:
        median_shape: median ``(H, W)`` of the training images (nnU-Net's initial patch size
            for 2-D data of this size).
        spacing: ``(H, W)`` pixel spacing (any unit).
        min_feature_map_size: smallest bottleneck edge (nnU-Net: 4).
        base_features: features of the first stage (nnU-Net: 32).
        max_features: feature cap (nnU-Net 2-D: 512).
        num_training_pixels: total pixels of the training set, for the 5 % batch rule.
        max_batch_size: batch size the memory budget allows (nnU-Net's 2-D reference: 12).
        min_batch_size: lower bound (nnU-Net: 2).

    Returns:
        The plan.

    Raises:
        ValueError: if the shape or spacing is not 2-D and positive.
    """
    if len(median_shape) != 2 or len(spacing) != 2 or min(median_shape) <= 0 or min(spacing) <= 0:
        raise ValueError(
            f"plan_2d needs a positive 2-D shape and spacing, got {median_shape} and {spacing}."
        )
    size = [float(s) for s in median_shape]
    cur_spacing = [float(s) for s in spacing]
    strides: list[tuple[int, int]] = [(1, 1)]
    kernels: list[tuple[int, int]] = []
    kernel = [1, 1]
    pools = [0, 0]
    while True:
        by_size = [d for d in range(2) if size[d] >= 2 * min_feature_map_size]
        if not by_size:
            break
        finest = min(cur_spacing[d] for d in by_size)
        axes = [d for d in by_size if cur_spacing[d] / finest < 2]
        # A single remaining axis is pooled only if it is comfortably large.
        if len(axes) == 1 and size[axes[0]] < 3 * min_feature_map_size:
            break
        for d in range(2):
            if cur_spacing[d] / min(cur_spacing) < 2:
                kernel[d] = 3
        stride = [1, 1]
        for d in axes:
            stride[d] = 2
            pools[d] += 1
            cur_spacing[d] *= 2
            size[d] = math.ceil(size[d] / 2)
        strides.append((stride[0], stride[1]))
        kernels.append((kernel[0], kernel[1]))
    kernels.append((3, 3))  # the bottleneck always uses full kernels
    divisor = (2 ** pools[0], 2 ** pools[1])
    patch = tuple(int(math.ceil(s / d) * d) for s, d in zip(median_shape, divisor, strict=True))
    filters = tuple(min(base_features * 2**i, max_features) for i in range(len(strides)))
    batch = None
    if num_training_pixels is not None:
        five_percent = round(0.05 * num_training_pixels / (patch[0] * patch[1]))
        batch = max(min_batch_size, min(max_batch_size, five_percent))
    return NnUNetPlan2D(patch, tuple(strides), tuple(kernels), filters, divisor, batch)


class NnUNetStyleDynUNet(nn.Module):
    """MONAI ``DynUNet`` with an nnU-Net-style plan and deep supervision in ``aux``.

    Instance norm (affine), leaky ReLU (slope 0.01), two convolutions per stage, transposed
    convolutions for upsampling, as nnU-Net's ``PlainConvUNet``. With ``deep_supervision`` the
    output is a :class:`SegOutput` whose ``aux["deep_supervision"]`` holds the logits of every
    decoder stage below full resolution, finest first, at their own (lower) resolution, for
    :class:`octseg.losses.DeepSupervisionLoss`.

    Args:
        in_channels: image channels.
        num_classes: output classes, background included.
        median_shape: median training image ``(H, W)``.
        spacing: ``(H, W)`` pixel spacing.
        deep_supervision: return the lower-resolution heads.
        deep_supr_num: number of heads. Default: every decoder stage below full resolution
            except the coarsest, which nnU-Net computes but weighs 0; with the default halving
            weights of :class:`octseg.losses.DeepSupervisionLoss` the loss equals nnU-Net's.

    Examples::

        >>> net = NnUNetStyleDynUNet(1, 10, median_shape=(496, 523), spacing=(3.87, 11.3))
        >>> net.plan.strides[:3]
        ((1, 1), (2, 1), (2, 2))
    """

    requires_square = False

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        median_shape: Sequence[int] = (496, 523),
        spacing: Sequence[float] = (3.87, 11.3),
        deep_supervision: bool = True,
        deep_supr_num: int | None = None,
    ) -> None:
        super().__init__()
        self.plan = plan_2d(median_shape, spacing)
        # Per-axis pooling divisor, e.g. (128, 64): PadToDivisor pads each axis to its own.
        self.size_divisor = tuple(self.plan.divisor)
        # Instance norm in the bottleneck needs more than one spatial element.
        self.min_hw = (2 * self.plan.divisor[0], 2 * self.plan.divisor[1])
        n_up = len(self.plan.strides) - 1
        heads = n_up - 2 if deep_supr_num is None else int(deep_supr_num)
        self.deep_supervision = deep_supervision and heads > 0
        self.net = DynUNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            kernel_size=[list(k) for k in self.plan.kernel_sizes],
            strides=[list(s) for s in self.plan.strides],
            upsample_kernel_size=[list(s) for s in self.plan.strides[1:]],
            filters=list(self.plan.filters),
            norm_name=("instance", {"affine": True}),
            act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
            deep_supervision=self.deep_supervision,
            deep_supr_num=max(heads, 1),
            res_block=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | SegOutput:
        """``(B, C_in, H, W) -> (B, K, H, W)`` logits (+ deep-supervision heads in ``aux``)."""
        if not self.deep_supervision:
            return self.net(x)
        # Run DynUNet's layers directly: its own training-mode forward upsamples every head to
        # full resolution, whereas nnU-Net scores them at their own resolution.
        logits = self.net.output_block(self.net.skip_layers(x))
        return SegOutput(logits=logits, aux={"deep_supervision": list(self.net.heads)})
