"""SD-LayerNet: semi-supervised retinal layer segmentation with a disentangled representation.

Fazekas B., Aresta G., Lachinov D., Riedl S., Mai J., Schmidt-Erfurth U., Bogunović H.,
"SD-LayerNet: Semi-supervised retinal layer segmentation in OCT using disentangled
representation with anatomical priors", MICCAI 2022, LNCS 13438, pp. 320-329,
doi:10.1007/978-3-031-16452-1_31, arXiv:2207.00458. Written from the paper's description as
summarised in OCTSeg's methods catalogue (``shared/docs/methods.md`` §3.8) and a reading of the
official code (``ABotond/SD-LayerNet``); no code copied.

Structure:

* Anatomy: an attention U-Net (channels 32..512, residual conv blocks, bilinear upsampling,
  additive attention gates; :mod:`octseg.models.blocks.attention`) gives 64 features; the layer
  predictor (an 11x11 residual block to 32 channels, then 1x1) gives one logit map per surface.
* Layer engine (:mod:`octseg.models.blocks.layer_engine`): softmax along depth per column,
  soft-argmax positions, spread, topology / continuity / curvature violations (curvature limits:
  the ``curvature_limits`` buffer, estimated from the training labels by
  :class:`~octseg.modules.sd_layernet.SDLayerNetModule`, saved in checkpoints), the 1-D
  (monotone positions) and 2-D (ordered region masks) topological corrections.
* Hard anatomy: the region masks rounded with a straight-through gradient.
* Modality encoder (VAE): image + hard anatomy, four stride-2 conv3x3-BN-LeakyReLU(0.2) (16
  channels), dense 32 + BatchNorm1d + LeakyReLU, then mean and log-variance of a 15-d ``z``.
* FiLM decoder: four FiLM layers (16 filters; gamma and beta from ``z``), conv3x3 to the image.

``logits`` are ``log(region mask + eps)`` placed at each region's label (``ordered_labels``),
``log(eps)`` for labels that are no region (fluid), so the argmax and softmax of the logits are
the region masks and every metric works unchanged. ``aux``: ``surface_logprob [B,S,H,W]``,
``positions [B,S,W]`` (corrected), ``raw_positions``, ``position_std``, ``topology``,
``continuity``, ``curvature_excess`` (``|kappa| - limit``), ``regions [B,S+1,H,W]``,
``hard_anatomy``, ``recon [B,1,H,W]``, ``z_mu``, ``z_logvar``, ``z_est``.

Parameters (official configuration: 12 regions, 256 x 256): 13,316,806 (U-Net 12,655,068,
layer predictor 496,203, modality encoder 141,134, decoder 24,401), equal to the official
structure once it is patched to build (catalogue: 13.32 M, 12.66 M, 0.50 M, 0.14 M, 0.02 M);
13,315,843 at Duke's 9 regions. The layer engine gives the official engine's outputs (checked
against it on random logits: positions, region masks, violations).

Deviations from the official code (every one documented in docs/models.md):

* **Builds and runs anywhere**: the attention gates take the arguments they declare (the
  official ``AttU_Net`` passes unknown keywords: TypeError); no ``.cuda()``; the curvature
  limits are a buffer estimated per dataset from its training labels instead of the fixed
  11-surface table repeated to width 256.
* **Any B-scan size**: the U-Net input is reflect-padded to a multiple of 16 inside the network
  and its features cropped back, so the depth softmax runs over the true rows only; the modality
  encoder average-pools its last feature map to 16 x 16 before the dense layer (identity at the
  official 256 x 256, so the parameter count is unchanged).
* **Decoder output**: ``output_activation="identity"`` by default, since OCTSeg images are
  standardised (mean/std) rather than in ``[-1, 1]``; ``"tanh"`` restores the official output.
* **Eval mode** uses ``z = mu`` (the official code samples ``z`` at test time too).
* The optional extra "surface" anatomical factors (unused in the official configuration,
  ``n_anatomical_factors == n_classes``) are not offered.

Input: any ``H x W`` (``size_divisor`` 1); BatchNorm1d needs at least 2 B-scans per training
batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from octseg.models.base import SegOutput
from octseg.models.blocks.attention import AttentionGate, ResidualConvBlock, UpConvBNAct
from octseg.models.blocks.layer_engine import (
    column_softmax,
    column_std,
    continuity_violations,
    curvature,
    monotone_positions,
    region_masks,
    soft_argmax,
    topology_violations,
)
from octseg.models.wrappers import pad_to_divisor

__all__ = ["AttentionUNet", "FiLMDecoder", "ModalityEncoder", "SDLayerNet"]


class AttentionUNet(nn.Module):
    """Attention U-Net with residual blocks (SD-LayerNet's feature extractor).

    Args:
        in_channels: image channels.
        out_channels: feature channels of the final 1x1 convolution.
        channels: widths of the five stages.
        drop_rate: channel dropout rate.
    """

    size_divisor = 16

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 64,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        c = [int(v) for v in channels]
        if len(c) != 5:
            raise ValueError(f"model.net.channels must list 5 stage widths, got {c}.")
        self.down = nn.ModuleList(
            ResidualConvBlock(a, b, drop_rate=drop_rate)
            for a, b in zip([in_channels, *c[:-1]], c, strict=True)
        )
        self.up = nn.ModuleList(UpConvBNAct(c[i + 1], c[i], drop_rate) for i in range(3, -1, -1))
        self.gates = nn.ModuleList(AttentionGate(c[i], c[i], c[i] // 2) for i in range(3, -1, -1))
        self.fuse = nn.ModuleList(
            ResidualConvBlock(2 * c[i], c[i], drop_rate=drop_rate) for i in range(3, -1, -1)
        )
        self.head = nn.Conv2d(c[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` (H, W multiples of 16) -> features ``[B, out_channels, H, W]``."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, gate, fuse in zip(self.up, self.gates, self.fuse, strict=True):
            x = up(x)
            x = fuse(torch.cat((gate(x, skips.pop()), x), dim=1))
        return self.head(x)


def _conv_bn_lrelu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2),
    )


class ModalityEncoder(nn.Module):
    """VAE encoder of the image's appearance given its anatomy.

    Args:
        in_channels: image channels plus anatomical factors.
        latent_dim: size of ``z`` (15 in the official configuration).
        channels: convolution channels (16).
        grid: side of the pooled map read by the dense layer (official: image size / 16).
    """

    def __init__(
        self, in_channels: int, latent_dim: int = 15, channels: int = 16, grid: int = 16
    ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            _conv_bn_lrelu(in_channels, channels),
            *(_conv_bn_lrelu(channels, channels) for _ in range(3)),
        )
        self.pool = nn.AdaptiveAvgPool2d((grid, grid))
        self.dense = nn.Sequential(
            nn.Linear(channels * grid * grid, 32), nn.BatchNorm1d(32), nn.LeakyReLU(0.2)
        )
        self.mu = nn.Linear(32, latent_dim)
        self.logvar = nn.Linear(32, latent_dim)

    def forward(
        self, image: torch.Tensor, anatomy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(mu, logvar)``, each ``[B, latent_dim]``."""
        h = self.dense(self.pool(self.convs(torch.cat((image, anatomy), dim=1))).flatten(1))
        return self.mu(h), self.logvar(h)


class FiLMLayer(nn.Module):
    """conv3x3-LReLU, conv3x3-LReLU, FiLM ``(gamma, beta)`` from ``z``, LReLU, plus the first
    convolution's output."""

    def __init__(self, in_channels: int, latent_dim: int, filters: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, filters, 3, padding=1), nn.LeakyReLU(0.2)
        )
        self.conv2 = nn.Sequential(nn.Conv2d(filters, filters, 3, padding=1), nn.LeakyReLU(0.2))
        self.film = nn.Sequential(
            nn.Linear(latent_dim, 2 * filters),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * filters, 2 * filters),
            nn.LeakyReLU(0.2),
        )
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        first = self.conv1(x)
        gamma, beta = self.film(z)[..., None, None].chunk(2, dim=1)
        return first + self.act(self.conv2(first) * gamma + beta)


class FiLMDecoder(nn.Module):
    """Reconstructs the image from anatomy and ``z``: four FiLM layers, then conv3x3.

    Args:
        anatomy_channels: anatomical factors (the region masks).
        latent_dim: size of ``z``.
        out_channels: image channels.
        filters: FiLM layer width (16).
        output_activation: ``"identity"`` or ``"tanh"`` (official, for images in [-1, 1]).
    """

    def __init__(
        self,
        anatomy_channels: int,
        latent_dim: int = 15,
        out_channels: int = 1,
        filters: int = 16,
        output_activation: str = "identity",
    ) -> None:
        super().__init__()
        if output_activation not in ("identity", "tanh"):
            raise ValueError(
                f"model.net.output_activation must be 'identity' or 'tanh', got "
                f"{output_activation!r}."
            )
        widths = [anatomy_channels, filters, filters, filters]
        self.layers = nn.ModuleList(FiLMLayer(w, latent_dim, filters) for w in widths)
        self.out = nn.Conv2d(filters, out_channels, kernel_size=3, padding=1)
        self.tanh = output_activation == "tanh"

    def forward(self, anatomy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = anatomy
        for layer in self.layers:
            x = layer(x, z)
        x = self.out(x)
        return torch.tanh(x) if self.tanh else x


class SDLayerNet(nn.Module):
    """SD-LayerNet (Fazekas et al., MICCAI 2022); see the module docstring.

    Args:
        in_channels: image channels (1 for OCT).
        num_classes: the dataset's classes (logits ``[B, num_classes, H, W]``).
        ordered_labels: region labels top to bottom (``dataset.anatomy.ordered_labels``);
            None: every class, in label order. ``S = len(ordered_labels) - 1`` surfaces.
        channels: attention U-Net stage widths.
        feature_channels: U-Net output features (64).
        predictor_channels: layer predictor width (32).
        predictor_kernel: layer predictor kernel size (11).
        latent_dim: size of ``z`` (15).
        encoder_channels: modality encoder width (16).
        encoder_grid: modality encoder's pooled grid side (16 = 256 / 16).
        decoder_filters: FiLM decoder width (16).
        output_activation: decoder output, ``"identity"`` or ``"tanh"``.
        drop_rate: U-Net channel dropout (0).
        eps: floor of the region probabilities inside the log of the logits.

    Raises:
        ValueError: on fewer than 2 regions, repeated labels, or labels outside the classes.
    """

    size_divisor = 1  # pads to 16 itself, so the depth softmax sees the true rows only
    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        ordered_labels: Sequence[int] | None = None,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        feature_channels: int = 64,
        predictor_channels: int = 32,
        predictor_kernel: int = 11,
        latent_dim: int = 15,
        encoder_channels: int = 16,
        encoder_grid: int = 16,
        decoder_filters: int = 16,
        output_activation: str = "identity",
        drop_rate: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        source = range(num_classes) if ordered_labels is None else ordered_labels
        labels = [int(v) for v in source]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(
                f"model.net.ordered_labels must list at least 2 distinct region labels, got "
                f"{labels} (dataset.anatomy.ordered_labels)."
            )
        if min(labels) < 0 or max(labels) >= num_classes:
            raise ValueError(
                f"model.net.ordered_labels {labels} must lie in [0, {num_classes}) "
                f"(dataset.num_classes={num_classes})."
            )
        self.num_classes = int(num_classes)
        self.num_surfaces = len(labels) - 1
        self.log_eps = math.log(eps)
        self.eps = float(eps)
        self.register_buffer("region_labels", torch.tensor(labels), persistent=False)
        # Per-surface curvature limits, estimated from the training labels before fitting
        # (SDLayerNetModule.setup) and saved in checkpoints; inf = no curvature prior yet.
        self.register_buffer("curvature_limits", torch.full((self.num_surfaces,), math.inf))
        self.unet = AttentionUNet(in_channels, feature_channels, channels, drop_rate)
        self.layer_predictor = nn.Sequential(
            ResidualConvBlock(feature_channels, predictor_channels, predictor_kernel),
            nn.Conv2d(predictor_channels, self.num_surfaces, kernel_size=1),
        )
        regions = len(labels)
        self.modality_encoder = ModalityEncoder(
            in_channels + regions, latent_dim, encoder_channels, encoder_grid
        )
        self.decoder = FiLMDecoder(
            regions, latent_dim, in_channels, decoder_filters, output_activation
        )

    @property
    def curvature_estimated(self) -> bool:
        """Whether the curvature limits were set (:meth:`set_curvature_limits`)."""
        return bool(torch.isfinite(self.curvature_limits).any())

    def set_curvature_limits(self, limits: torch.Tensor) -> None:
        """Sets the per-surface curvature limits ``[S]``.

        Raises:
            ValueError: on a wrong length or a negative limit.
        """
        limits = torch.as_tensor(limits, dtype=torch.float32).flatten()
        if limits.numel() != self.num_surfaces or bool((limits < 0).any()):
            raise ValueError(
                f"curvature limits must be {self.num_surfaces} non-negative values (one per "
                f"surface), got {limits.tolist()}."
            )
        self.curvature_limits.copy_(limits.to(self.curvature_limits.device))

    def forward(self, x: torch.Tensor) -> SegOutput:
        """``[B, C, H, W]`` (any size) -> :class:`SegOutput` with logits ``[B, K, H, W]``."""
        h, w = x.shape[-2:]
        padded, _ = pad_to_divisor(x, AttentionUNet.size_divisor)
        features = self.unet(padded)[..., :h, :w]
        prob, logprob = column_softmax(self.layer_predictor(features))
        raw = soft_argmax(prob)
        regions = region_masks(prob)
        # Straight-through rounding: hard masks forward, identity gradient backward.
        hard = regions + (regions.round() - regions).detach()
        mu, logvar = self.modality_encoder(x, hard)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        recon = self.decoder(hard, z)
        z_est, _ = self.modality_encoder(recon.detach(), hard.detach())
        logits = x.new_full((x.shape[0], self.num_classes, h, w), self.log_eps)
        logits = logits.index_copy(1, self.region_labels, regions.clamp_min(self.eps).log())
        aux = {
            "surface_logprob": logprob,
            "positions": monotone_positions(raw),
            "raw_positions": raw,
            "position_std": column_std(prob, raw),
            "topology": topology_violations(raw),
            "continuity": continuity_violations(raw),
            "curvature_excess": curvature(raw).abs() - self.curvature_limits.view(1, -1, 1),
            "regions": regions,
            "hard_anatomy": hard,
            "recon": recon,
            "z_mu": mu,
            "z_logvar": logvar,
            "z_est": z_est,
        }
        return SegOutput(logits=logits, aux=aux)
