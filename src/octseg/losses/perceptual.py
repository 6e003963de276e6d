"""M2SNet's LossNet: a perceptual loss from a frozen, ImageNet-trained VGG-16.

Zhao X. et al., "M2SNet: Multi-scale in Multi-scale Subtraction Network for Medical Image
Segmentation", arXiv:2303.10894, 2023 ("training-free loss network"); official ``LossNet`` in
``Xiaoqi-Zhao-DLUT/MSNet-M2SNet/model/miccai_msnet.py``, used as ``0.1 * LossNet(sigmoid(out),
mask)`` in its ``train.py``. The prediction and the mask are each repeated to 3 channels,
ImageNet-normalised, resized to 224 x 224 (bilinear) and passed through VGG-16's
``features[:4]``, ``[4:9]``, ``[9:16]``, ``[16:23]`` (up to relu1_2, relu2_2, relu3_3, relu4_3);
the loss is the sum over the four blocks of the mean squared difference of the features.

OCTSeg's version:

* **K classes**: the softmax probability of every class is compared with its one-hot mask, as
  one grey image per class; the mean over images and classes (``include_background=false``
  leaves class 0 out). The official code has one sigmoid channel.
* **Really frozen**: the VGG is held outside the module registry, so it is in no
  ``state_dict``/checkpoint and no optimiser; its parameters have ``requires_grad=False`` and it
  stays in eval mode (upstream's freezing loop iterates over modules, not parameters, and it
  relies on the training script; its normalisation constants are trainable parameters).
  Gradients flow through it to the prediction only; the mask's features are computed without
  autograd.
* **No download**: the weights come from a local file (``weights_path``: a torchvision
  ``vgg16`` state dict, e.g. ``vgg16-397923af.pth`` from a machine with internet, or its
  ``features`` part). Without one the term is **off** (returns 0) and a warning says so: a
  randomly initialised VGG is not a perceptual loss.
* Ignored pixels (``ignore_index``) are 0 in both images, so they add no difference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import vgg

from octseg.losses.terms import masked_one_hot
from octseg.models.base import SegOutput
from octseg.utils.checkpoint_io import load_state_dict_strict, read_weights_file

__all__ = ["LossNetPerceptualLoss", "load_vgg16_blocks", "perceptual_distance"]

log = logging.getLogger(__name__)

VGG16_CUTS = (0, 4, 9, 16, 23)  # features[:4], [4:9], [9:16], [16:23]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_vgg16_blocks(path: str | Path) -> nn.ModuleList:
    """The four frozen VGG-16 feature blocks, with weights from a local file.

    Args:
        path: a torchvision ``vgg16`` state dict (``features.*`` keys; ``classifier.*`` is
            ignored) or the state dict of its ``features`` module (``0.weight``, ...).

    Returns:
        ``ModuleList`` of 4 ``Sequential`` blocks in eval mode with ``requires_grad=False``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file does not hold the VGG-16 convolutions up to relu4_3.
    """
    setting = "loss.terms.lossnet.weights_path"
    hint = (
        "give a local torchvision vgg16 state dict or set it to null (the perceptual term is "
        "then off)."
    )
    state = read_weights_file(path, setting, hint)
    if any(k.startswith("features.") for k in state):
        state = {k.removeprefix("features."): v for k, v in state.items() if k[:9] == "features."}
    # torchvision's own VGG-16 ("D") layer builder, without the 124 M-parameter classifier.
    features = vgg.make_layers(vgg.cfgs["D"])[: VGG16_CUTS[-1]]
    wanted = set(features.state_dict())
    state = {k: v for k, v in state.items() if k in wanted}
    expected = "VGG-16 weights (torchvision layout) up to relu4_3"
    load_state_dict_strict(features, state, setting, path, expected)
    blocks = nn.ModuleList(
        features[a:b] for a, b in zip(VGG16_CUTS[:-1], VGG16_CUTS[1:], strict=True)
    )
    blocks.requires_grad_(False)
    return blocks.eval()


def perceptual_distance(
    blocks: nn.ModuleList, pred: torch.Tensor, target: torch.Tensor, size: int | None = 224
) -> torch.Tensor:
    """Sum over ``blocks`` of the feature MSE of grey images ``pred``/``target [N,1,H,W]``.

    Each image is repeated to RGB, ImageNet-normalised and (``size`` not None) resized to
    ``size x size``, as the official LossNet does; ``target`` gets no autograd graph.
    """
    mean = pred.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = pred.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = (x.expand(-1, 3, -1, -1) - mean) / std
        if size is not None:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    x, y = prepare(pred), prepare(target)
    with torch.no_grad():
        targets = []
        for block in blocks:
            y = block(y)
            targets.append(y)
    loss = pred.new_zeros((), dtype=torch.float32)
    for block, y in zip(blocks, targets, strict=True):
        x = block(x)
        loss = loss + F.mse_loss(x.float(), y.float())
    return loss


class LossNetPerceptualLoss(nn.Module):
    """Objective term: M2SNet's LossNet on softmax probabilities vs. one-hot masks.

    Args:
        weights_path: local torchvision VGG-16 weights; None (default) switches the term off
            (it returns 0 and logs a warning).
        ignore_index: label set to 0 in both images.
        include_background: whether class 0 is compared.
        size: side of the square the images are resized to (official 224; None = as they are).
    """

    def __init__(
        self,
        weights_path: str | None = None,
        ignore_index: int = 255,
        include_background: bool = True,
        size: int | None = 224,
    ) -> None:
        super().__init__()
        self.weights_path = weights_path
        self.ignore_index = ignore_index
        self.include_background = include_background
        self.size = size
        # Outside the module registry (plain __dict__ entry): not in state_dict(), parameters(),
        # checkpoints or optimisers, and .train() never switches it out of eval mode.
        self.__dict__["blocks"] = load_vgg16_blocks(weights_path) if weights_path else None
        if self.blocks is None:
            log.warning(
                "M2SNet LossNet (perceptual) term is OFF: loss.terms.lossnet.weights_path is "
                "null. A randomly initialised VGG-16 is not a perceptual loss; give a local "
                "torchvision vgg16 state dict to enable it (docs/models.md, 'M2SNet')."
            )

    @property
    def enabled(self) -> bool:
        """Whether VGG weights were loaded (otherwise the term is 0)."""
        return self.blocks is not None

    def _blocks_on(self, device: torch.device) -> nn.ModuleList:
        blocks = self.blocks
        if next(blocks.parameters()).device != device:
            blocks = blocks.to(device)
            self.__dict__["blocks"] = blocks
        return blocks

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of raw ``logits [B,K,H,W]`` against labels ``target [B,H,W]``."""
        if self.blocks is None:
            return logits.new_zeros((), dtype=torch.float32)
        one_hot, valid = masked_one_hot(target, logits.shape[1], self.ignore_index)
        probs = logits.float().softmax(dim=1) * valid
        if not self.include_background:
            probs, one_hot = probs[:, 1:], one_hot[:, 1:]
        b, k, h, w = probs.shape
        blocks = self._blocks_on(logits.device)
        return perceptual_distance(
            blocks, probs.reshape(b * k, 1, h, w), one_hot.reshape(b * k, 1, h, w), self.size
        )

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.compute(output.logits, batch["mask"])
