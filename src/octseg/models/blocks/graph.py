"""Graph reasoning blocks: the global reasoning (GloRe) unit and its graph convolution.

Chen Y., Rohrbach M., Yan Z., Yan S., Feng J., Kalantidis Y., "Graph-Based Global Reasoning
Networks", CVPR 2019, arXiv:1811.12814. The layout is the variant used by MGU-Net
(``Jiaxuan-Li/MGU-Net``, ``models/utils/utils.py``): pixel features are projected onto a small
set of graph nodes by a learned projection, two graph convolutions reason over the nodes, and a
second learned projection (the "reprojection") maps the node states back to the pixels, where
they are added to the input residually.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GraphConv", "GloReUnit", "conv_bn_relu"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1) -> nn.Sequential:
    """``conv (with bias) -> BN -> ReLU`` with "same" padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class GraphConv(nn.Module):
    """One graph convolution on a fully connected node graph (GloRe's ``GCN``).

    The adjacency is learned as a ``Conv1d`` over the node axis (node ``i``'s new state mixes
    every node's state), with the identity added (``A + I``); a LeakyReLU follows, then a
    ``Conv1d`` over the state axis (the layer's weight matrix).

    Args:
        num_state: feature length of every node.
        num_node: number of nodes.
    """

    def __init__(self, num_state: int, num_node: int) -> None:
        super().__init__()
        self.adjacency = nn.Conv1d(num_node, num_node, kernel_size=1, bias=True)
        self.act = nn.LeakyReLU(0.2)
        self.weight = nn.Conv1d(num_state, num_state, kernel_size=1, bias=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, num_state, num_node] -> [B, num_state, num_node]``."""
        h = self.adjacency(v.transpose(1, 2)).transpose(1, 2) + v
        return self.weight(self.act(h))


class GloReUnit(nn.Module):
    """Global reasoning unit: project to nodes, two graph convolutions, reproject, residual.

    ``num_s = 2 * num_mid`` state channels and ``num_n = num_mid`` nodes, as MGU-Net builds it.
    Three ``1x1 conv -> BN -> ReLU`` maps compute the pixel states ``S [B, num_s, HW]``, the
    projection ``P [B, num_n, HW]`` and the reprojection ``R [B, num_n, HW]``; node states are
    ``V = S P^T / HW``; after two :class:`GraphConv` the pixel states ``V R`` go through a
    ``1x1`` conv (no bias) and BatchNorm and are added to the input.

    Args:
        num_in: input (and output) channels.
        num_mid: nodes; the node state length is twice this.
    """

    def __init__(self, num_in: int, num_mid: int) -> None:
        super().__init__()
        self.num_s = 2 * num_mid
        self.num_n = num_mid
        self.conv_state = conv_bn_relu(num_in, self.num_s)
        self.conv_proj = conv_bn_relu(num_in, self.num_n)
        self.conv_reproj = conv_bn_relu(num_in, self.num_n)
        self.gcn1 = GraphConv(self.num_s, self.num_n)
        self.gcn2 = GraphConv(self.num_s, self.num_n)
        self.fc = nn.Conv2d(self.num_s, num_in, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(num_in)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Node states ``[B, num_s, num_n]`` of the pixel features ``x [B, num_in, H, W]``."""
        b = x.shape[0]
        state = self.conv_state(x).reshape(b, self.num_s, -1)
        proj = self.conv_proj(x).reshape(b, self.num_n, -1)
        # Averaging over pixels keeps node states independent of the map size.
        return torch.bmm(state, proj.transpose(1, 2)) / state.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, num_in, H, W] -> [B, num_in, H, W]``."""
        b, _, h, w = x.shape
        nodes = self.gcn2(self.gcn1(self.project(x)))
        reproj = self.conv_reproj(x).reshape(b, self.num_n, -1)
        pixels = torch.bmm(nodes, reproj).reshape(b, self.num_s, h, w)
        return x + self.bn(self.fc(pixels))
