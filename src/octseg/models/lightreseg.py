"""LightReSeg: a light encoder-decoder with a transformer at 1/16 and strip-conv attention skips.

He X., Song W., Wang Y., Poiesi F., Yi J., Desai M., Xu Q., Yang K., Wan Y., "Lightweight Retinal
Layer Segmentation With Global Reasoning", IEEE Trans. Instrum. Meas. 73:2520214, 2024,
doi:10.1109/TIM.2024.3400305, arXiv:2404.16346. Official code:
``Medical-Image-Analysis/LightReSeg`` (``Code/LightReSeg.py``, no licence file, no training
script); this file is written from the paper and a reading of it.

Structure: four encoder levels of ``(conv3x3 -> ReLU -> BN) x 2`` (16, 32, 64, 128 channels),
each followed by a separable stride-2 block (depthwise 3x3 stride 2 -> pointwise -> BN -> ReLU ->
depthwise 1x1 -> pointwise -> BN -> ReLU); at 1/16 the 128-channel map becomes one token per
pixel (linear embedding), a class token and position embeddings are added, dropout (p 0.5) and a
3-layer pre-norm ViT (8 heads x 64, MLP 768) run, and the tokens are added back to the map; a
``(conv3x3 -> ReLU -> BN) x 2`` bottleneck (256); four decoder blocks, each a 3x3 stride-2
transposed convolution to half the channels plus the skip refined by multi-scale asymmetric
attention (MAA: depthwise 5x5, then 1x7/7x1, 1x11/11x1 and 1x3/3x1 depthwise strips, each branch
through a DANet channel self-attention, fused by a 1x1 conv and multiplied with the skip),
``skip + 0.8 * MAA(skip)``, merged by addition; a 1x1 head.

Parameters at 1 input channel and 9 classes: 3,306,955 with ``head="official"`` (the official
structure, 3.31 M), 3,306,937 with the default plain head; 3,306,954 at 10 classes (Duke).

Deviations from the official code:

* **Position embeddings adapt to the input size.** The official code adds the first ``n + 1``
  rows of a learned ``1445 x 128`` table in raster order and rebuilds the map with a hard-coded
  token height (``h=14``, i.e. 224-pixel inputs; the seed copy: ``h=32``), so one trained model
  serves one input height, and at most 1444 tokens. Here the same 1,445 x 128 parameters are a
  class-token embedding plus a learned ``38 x 38`` grid (``pos_grid``; 38 x 38 = 1444 tokens)
  that is resized bilinearly to the token grid ``(H/16, W/16)`` of every input, and the map is
  rebuilt from the actual token grid. For inputs of ``38*16 = 608`` pixels square nothing is
  resized.
* **Logits head.** The official head is ``conv1x1 -> ReLU -> BN``, which bounds the scores from
  below and is a poor logit; the default here is a plain 1x1 convolution (``head="linear"``),
  the official head is ``head="official"``.
* Einops and timm are not needed (the official code imports timm only for ``trunc_normal_``);
  attention uses ``scaled_dot_product_attention`` (same scale ``dim_head ** -0.5``).
* Channel self-attention energies are computed in float32 under mixed precision (a ``C x C``
  Gram matrix over all pixels overflows bfloat16's precision).

Kept from the official code: ReLU before BatchNorm in the convolution blocks, the token dropout
of 0.5 (``token_dropout``), the 0.8 skip-attention factor, the He-normal initialisation of the
decoder and separable blocks (std ``sqrt(2 / (k_h * k_w * C_out))``), truncated-normal
transformer weights and standard-normal class token and position embeddings.

Input: multiples of 16; any B-scan through :class:`~octseg.models.wrappers.PadToDivisor`.
"""

from __future__ import annotations

import torch
from torch import nn

from octseg.models.blocks.init import init_weights
from octseg.models.blocks.transformer import GridPositionEmbedding, TransformerEncoder

__all__ = ["LightReSeg", "HEADS"]

HEADS = ("linear", "official")


def _conv_relu_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """``(conv3x3 -> ReLU -> BN) x 2`` with conv biases (the official order: ReLU before BN)."""
    layers: list[nn.Module] = []
    for c_in in (in_channels, out_channels):
        layers += [
            nn.Conv2d(c_in, out_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(out_channels),
        ]
    return nn.Sequential(*layers)


class SeparableDown(nn.Sequential):
    """Stride-2 separable block: dw3x3/2 -> pw -> BN -> ReLU -> dw1x1 -> pw -> BN -> ReLU."""

    def __init__(self, channels: int) -> None:
        c = channels
        super().__init__(
            nn.Conv2d(c, c, 3, stride=2, padding=1, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 1, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        # The official init: conv weights ~ N(0, 2 / (k_h k_w C_out)), BN to (1, 0).
        init_weights(self, "he_normal_fan_out")


class ChannelSelfAttention(nn.Module):
    """DANet's channel attention module (Fu et al., CVPR 2019): ``x + gamma * A x``.

    ``A = softmax(max(E) - E)`` row-wise, with ``E = X X^T`` the ``C x C`` Gram matrix of the
    flattened channels; ``gamma`` starts at 0, so the module starts as the identity.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w).float()
        energy = flat @ flat.transpose(1, 2)
        energy = energy.amax(dim=-1, keepdim=True) - energy
        out = (energy.softmax(dim=-1) @ flat).reshape(b, c, h, w)
        return x + (self.gamma * out).to(x.dtype)


class StripConvAttention(nn.Module):
    """LightReSeg's multi-scale asymmetric attention (MAA) on a skip connection.

    A depthwise 5x5 convolution, then three pairs of depthwise strip convolutions (1xk then kx1,
    k = 7, 11, 3); the four maps each pass a :class:`ChannelSelfAttention`, are concatenated,
    fused by a 1x1 convolution and multiply the input.

    Args:
        channels: input (and output) channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.conv0 = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.strips = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, c, (1, k), padding=(0, k // 2), groups=c),
                nn.Conv2d(c, c, (k, 1), padding=(k // 2, 0), groups=c),
            )
            for k in (7, 11, 3)
        )
        self.channel_attention = nn.ModuleList(ChannelSelfAttention() for _ in range(4))
        self.fuse = nn.Conv2d(4 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.conv0(x)
        branches = [base] + [strip(base) for strip in self.strips]
        attn = torch.cat(
            [ca(b) for ca, b in zip(self.channel_attention, branches, strict=False)], dim=1
        )
        return self.fuse(attn) * x


class AttentionSkipUp(nn.Module):
    """Decoder block: 3x3 stride-2 transposed conv to half the channels, plus the attended skip.

    Args:
        in_channels: channels of the coarser input (the skip has ``in_channels // 2``).
        skip_scale: factor of the attention term, ``skip + skip_scale * MAA(skip)`` (0.8).
    """

    def __init__(self, in_channels: int, skip_scale: float = 0.8) -> None:
        super().__init__()
        out = in_channels // 2
        self.up = nn.ConvTranspose2d(in_channels, out, 3, stride=2, padding=1, output_padding=1)
        self.attention = StripConvAttention(out)
        self.skip_scale = skip_scale
        init_weights(self, "he_normal_fan_out")

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return skip + self.skip_scale * self.attention(skip) + self.up(x)


class LightReSeg(nn.Module):
    """Lightweight encoder-decoder with a transformer at 1/16 (He et al., IEEE TIM 2024).

    Args:
        in_channels: image channels (1 for OCT).
        num_classes: output classes, background included.
        head: ``"linear"`` (1x1 conv, raw logits; default) or ``"official"`` (1x1 conv -> ReLU
            -> BN, as the official code).
        pos_grid: size of the learned position-embedding grid, resized to ``(H/16, W/16)``
            (default 38 x 38: the official table's 1444 token rows).
        token_dropout: dropout on the tokens before the transformer (official: 0.5).
        depth: transformer layers (3).
        heads: attention heads (8).

    Raises:
        ValueError: for an unknown ``head``.

    Examples::

        >>> net = LightReSeg(in_channels=1, num_classes=9)
        >>> net(torch.zeros(1, 1, 64, 96)).shape
        torch.Size([1, 9, 64, 96])
    """

    size_divisor = 16
    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        head: str = "linear",
        pos_grid: tuple[int, int] = (38, 38),
        token_dropout: float = 0.5,
        depth: int = 3,
        heads: int = 8,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(
                f"LightReSeg head must be one of {HEADS}, got {head!r}; set model.net.head."
            )
        widths = [16, 32, 64, 128]
        ins = [in_channels] + widths[:-1]
        self.encoders = nn.ModuleList(
            _conv_relu_bn(i, o) for i, o in zip(ins, widths, strict=False)
        )
        self.downs = nn.ModuleList(SeparableDown(c) for c in widths)
        dim = widths[-1]
        self.embed = nn.Linear(dim, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = GridPositionEmbedding(dim, tuple(pos_grid), cls_token=True)
        self.token_dropout = nn.Dropout(token_dropout)
        self.transformer = TransformerEncoder(dim, depth, heads, dim_head=64, mlp_dim=768)
        self.bottleneck = _conv_relu_bn(dim, 2 * dim)
        self.decoders = nn.ModuleList(AttentionSkipUp(2 * c) for c in widths)
        self.head_kind = head
        layers: list[nn.Module] = [nn.Conv2d(widths[0], num_classes, kernel_size=1)]
        if head == "official":
            layers += [nn.ReLU(inplace=True), nn.BatchNorm2d(num_classes)]
        self.head = nn.Sequential(*layers)

    def _global_reasoning(self, x: torch.Tensor) -> torch.Tensor:
        """Transformer over the 1/16 map (one token per pixel), added back residually."""
        b, c, h, w = x.shape
        tokens = self.embed(x.flatten(2).transpose(1, 2))
        tokens = torch.cat((self.cls_token.expand(b, -1, -1), tokens), dim=1)
        tokens = self.token_dropout(tokens + self.pos((h, w)))
        tokens = self.transformer(tokens)[:, 1:]
        return x + tokens.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, K, H, W)`` logits; H and W multiples of 16."""
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=False):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        y = self.bottleneck(self._global_reasoning(x))
        for k in reversed(range(4)):
            y = self.decoders[k](skips[k], y)
        return self.head(y)
