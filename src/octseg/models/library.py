"""Thin adapter over segmentation networks from maintained libraries (MONAI, smp).

One class, :class:`LibraryNet`, builds a library network by a short name, maps OCTSeg's
``in_channels``/``num_classes`` onto the library's argument names, declares the input policy
(``size_divisor`` computed from the architecture's downsampling, ``requires_square``) and turns
list outputs into :class:`~octseg.models.base.SegOutput`. Nothing is downloaded: smp encoders
default to ``encoder_weights=None``; set ``model.net.encoder_weights=imagenet`` on a machine with
internet access (the weights are fetched once into the torch hub cache, ``$TORCH_HOME``).

Available names (see :data:`LIBRARY_NETS`):

* ``monai_attention_unet`` — Oktay et al., "Attention U-Net", MIDL 2018 (MONAI ``AttentionUnet``);
* ``monai_basic_unetplusplus`` — Zhou et al., "UNet++", DLMIA 2018 (MONAI ``BasicUNetPlusPlus``;
  with ``deep_supervision=True`` the three intermediate heads go to ``aux["deep_supervision"]``);
* ``monai_swin_unetr`` — Hatamizadeh et al., "Swin UNETR", BrainLes 2021 (MONAI ``SwinUNETR``,
  ``spatial_dims=2``);
* ``monai_segresnet`` — Myronenko, "3D MRI brain tumor segmentation using autoencoder
  regularization", BrainLes 2018 (MONAI ``SegResNet``, 2-D, without the VAE branch);
* ``smp_unet`` / ``smp_deeplabv3plus`` — segmentation_models_pytorch ``Unet`` and
  ``DeepLabV3Plus`` (Chen et al., ECCV 2018), ResNet-34 encoder by default.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from octseg.models.base import SegOutput

__all__ = ["LibraryNet", "LibrarySpec", "LIBRARY_NETS"]


@dataclass(frozen=True)
class LibrarySpec:
    """How to build one library network.

    Attributes:
        target: dotted path of the network class.
        in_arg: the library's name for the input-channel argument.
        out_arg: the library's name for the class-count argument.
        divisor: ``kwargs -> size_divisor`` (the product of the architecture's downsamplings).
        defaults: keyword arguments used unless the config overrides them.
        list_output: the network returns a list of logits (final one last).
    """

    target: str
    in_arg: str
    out_arg: str
    divisor: Callable[[Mapping[str, Any]], int]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    list_output: bool = False


def _prod_strides(kwargs: Mapping[str, Any]) -> int:
    # A per-axis stride (list) counts with its largest entry.
    return int(math.prod(max(s) if isinstance(s, Sequence) else int(s) for s in kwargs["strides"]))


LIBRARY_NETS: dict[str, LibrarySpec] = {
    "monai_attention_unet": LibrarySpec(
        "monai.networks.nets.AttentionUnet",
        "in_channels",
        "out_channels",
        _prod_strides,
        {"spatial_dims": 2, "channels": (32, 64, 128, 256, 512), "strides": (2, 2, 2, 2)},
    ),
    "monai_basic_unetplusplus": LibrarySpec(
        "monai.networks.nets.BasicUNetPlusPlus",
        "in_channels",
        "out_channels",
        lambda kw: 16,
        {"spatial_dims": 2, "features": (32, 32, 64, 128, 256, 32), "deep_supervision": False},
        list_output=True,
    ),
    "monai_swin_unetr": LibrarySpec(
        "monai.networks.nets.SwinUNETR",
        "in_channels",
        "out_channels",
        lambda kw: int(kw.get("patch_size", 2)) ** 5,  # patch embedding + 4 patch mergings
        {"spatial_dims": 2, "feature_size": 24},
    ),
    "monai_segresnet": LibrarySpec(
        "monai.networks.nets.SegResNet",
        "in_channels",
        "out_channels",
        lambda kw: 2 ** (len(kw["blocks_down"]) - 1),
        {
            "spatial_dims": 2,
            "init_filters": 32,
            "blocks_down": (1, 2, 2, 4),
            "blocks_up": (1, 1, 1),
        },
    ),
    "smp_unet": LibrarySpec(
        "segmentation_models_pytorch.Unet",
        "in_channels",
        "classes",
        lambda kw: 2 ** int(kw.get("encoder_depth", 5)),
        {"encoder_name": "resnet34", "encoder_weights": None},
    ),
    "smp_deeplabv3plus": LibrarySpec(
        "segmentation_models_pytorch.DeepLabV3Plus",
        "in_channels",
        "classes",
        lambda kw: int(kw.get("encoder_output_stride", 16)),
        {"encoder_name": "resnet34", "encoder_weights": None},
    ),
}


def _import(target: str) -> Callable[..., nn.Module]:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


class LibraryNet(nn.Module):
    """A library segmentation network behind OCTSeg's network contract.

    Args:
        name: a key of :data:`LIBRARY_NETS`.
        in_channels: image channels.
        num_classes: output classes, background included.
        **kwargs: library arguments overriding the spec's defaults (lists are accepted where
            the library wants tuples).

    Raises:
        ValueError: for an unknown ``name``.

    Examples::

        >>> net = LibraryNet("monai_segresnet", in_channels=1, num_classes=10)
        >>> net.size_divisor
        8
    """

    requires_square = False

    def __init__(self, name: str, in_channels: int, num_classes: int, **kwargs: Any) -> None:
        super().__init__()
        if name not in LIBRARY_NETS:
            raise ValueError(
                f"Unknown library network {name!r}; expected one of {sorted(LIBRARY_NETS)} "
                "(octseg.models.library.LIBRARY_NETS)."
            )
        spec = LIBRARY_NETS[name]
        options = {**spec.defaults, **kwargs}
        # Hydra passes ListConfig; MONAI and smp expect plain tuples.
        options = {
            k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
            for k, v in options.items()
        }
        self.name = name
        self.list_output = spec.list_output
        self.size_divisor = spec.divisor(options)
        options[spec.in_arg] = in_channels
        options[spec.out_arg] = num_classes
        self.net = _import(spec.target)(**options)

    def forward(self, x: torch.Tensor) -> torch.Tensor | SegOutput:
        """``(B, C_in, H, W) -> (B, K, H, W)`` logits, or a :class:`SegOutput` with deep
        supervision when the library returns several heads; H, W multiples of ``size_divisor``."""
        out = self.net(x)
        if not self.list_output:
            return out
        if len(out) == 1:
            return out[0]
        # Heads ordered from the final one backwards (all at full resolution for UNet++).
        return SegOutput(logits=out[-1], aux={"deep_supervision": list(out[-2::-1])})
