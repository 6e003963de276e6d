"""Vision-transformer pieces for hybrid CNN-transformer networks (LightReSeg, and later others).

* :class:`TransformerEncoder` — a pre-norm ViT encoder (Dosovitskiy et al., ICLR 2021,
  arXiv:2010.11929): ``x + MHSA(LN(x))`` then ``x + MLP(LN(x))`` per layer, multi-head
  attention with a bias-free joint QKV projection and an output projection, GELU MLP.
* :class:`GridPositionEmbedding` — a learned position embedding stored as a 2-D grid and resized
  bilinearly to the token grid of the input, so one set of weights serves any B-scan size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from octseg.models.blocks.init import init_weights

__all__ = ["GridPositionEmbedding", "MultiHeadSelfAttention", "TransformerEncoder"]


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with ``heads x dim_head`` inner width.

    Args:
        dim: token width.
        heads: attention heads.
        dim_head: width of each head (scores scaled by ``dim_head ** -0.5``).
        dropout: dropout after the output projection.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, dim] -> [B, N, dim]``."""
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class TransformerEncoder(nn.Module):
    """Pre-norm transformer encoder layers with residual connections.

    Linear weights start from a truncated normal (std 0.02) with zero biases, LayerNorms from
    (1, 0), as in ViT implementations.

    Args:
        dim: token width.
        depth: number of layers.
        heads: attention heads.
        dim_head: width of each head.
        mlp_dim: hidden width of the GELU MLP.
        dropout: dropout inside attention output and MLP.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int = 8,
        dim_head: int = 64,
        mlp_dim: int = 768,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            mlp = nn.Sequential(
                nn.Linear(dim, mlp_dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(mlp_dim, dim),
                nn.Dropout(dropout),
            )
            attn = MultiHeadSelfAttention(dim, heads, dim_head, dropout)
            self.layers.append(nn.ModuleList([nn.LayerNorm(dim), attn, nn.LayerNorm(dim), mlp]))
        init_weights(self, "vit_trunc_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, dim] -> [B, N, dim]``."""
        for norm1, attn, norm2, mlp in self.layers:
            x = x + attn(norm1(x))
            x = x + mlp(norm2(x))
        return x


class GridPositionEmbedding(nn.Module):
    """Learned position embedding on a ``grid_h x grid_w`` grid, resized to any token grid.

    The stored grid is used as is when the token grid has its size and is otherwise resized
    bilinearly (``align_corners=False``), the usual way ViTs are run at a new resolution. An
    optional extra embedding serves a class token.

    Args:
        dim: token width.
        grid_hw: size ``(grid_h, grid_w)`` of the stored grid.
        cls_token: also hold an embedding for a leading class token.
        init_std: standard deviation of the normal initialisation.
    """

    def __init__(
        self, dim: int, grid_hw: tuple[int, int], cls_token: bool = True, init_std: float = 1.0
    ) -> None:
        super().__init__()
        gh, gw = (int(v) for v in grid_hw)
        self.grid = nn.Parameter(torch.randn(1, dim, gh, gw) * init_std)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * init_std) if cls_token else None

    def forward(self, hw: tuple[int, int]) -> torch.Tensor:
        """Embeddings ``[1, (1 +) h * w, dim]`` for an ``h x w`` token grid in raster order."""
        grid = self.grid
        if tuple(grid.shape[-2:]) != tuple(hw):
            grid = F.interpolate(grid, size=hw, mode="bilinear", align_corners=False)
        tokens = grid.flatten(2).transpose(1, 2)
        return tokens if self.cls is None else torch.cat((self.cls, tokens), dim=1)
