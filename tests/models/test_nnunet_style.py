"""nnU-Net-style planning and the DynUNet wrapper."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from octseg.models.nnunet_style import NnUNetStyleDynUNet, plan_2d
from octseg.utils.config import config_dir


def test_plan_for_duke_bscans() -> None:
    plan = plan_2d((496, 523), (3.87, 11.3), num_training_pixels=66 * 496 * 523)
    # The finer axial axis is pooled alone first, until both spacings are within 2x.
    assert plan.strides == ((1, 1), (2, 1)) + ((2, 2),) * 6
    assert plan.kernel_sizes == ((3, 1),) + ((3, 3),) * 7
    assert plan.filters == (32, 64, 128, 256, 512, 512, 512, 512)
    assert plan.divisor == (128, 64)
    assert plan.patch_size == (512, 576)
    # 5 % of 66 B-scans of 496 x 523 fit in about 3 patches of 512 x 576.
    assert plan.batch_size == 3


def test_plan_isotropic_square() -> None:
    plan = plan_2d((512, 512), (1.0, 1.0))
    assert len(plan.strides) == 8 and plan.patch_size == (512, 512)
    assert all(k == (3, 3) for k in plan.kernel_sizes)


def test_plan_rejects_3d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        plan_2d((10, 20, 30), (1.0, 1.0, 1.0))


def test_experiment_matches_plan() -> None:
    exp = OmegaConf.load(config_dir() / "experiment" / "nnunet_style_duke.yaml")
    plan = plan_2d(exp.model.net.median_shape, (3.87, 11.3), num_training_pixels=66 * 496 * 523)
    assert exp.dataset.datamodule.batch_size == plan.batch_size


def test_deep_supervision_heads_at_lower_resolution() -> None:
    net = NnUNetStyleDynUNet(1, 5, median_shape=(64, 64), spacing=(1.0, 1.0)).train()
    out = net(torch.randn(2, 1, 64, 64))
    assert out.logits.shape == (2, 5, 64, 64)
    sizes = [tuple(t.shape[-2:]) for t in out.aux["deep_supervision"]]
    # 5 stages: decoder outputs at 1/8..1/1; heads below full resolution except the coarsest.
    assert sizes == [(32, 32), (16, 16)]
