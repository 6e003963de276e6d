"""Fast Fourier convolution (FFC) blocks.

Chi L., Jiang B., Mu Y., "Fast Fourier Convolution", NeurIPS 2020. The layout (and the names of
the parts) follows the variant used by Y-Net (Farshad et al., MICCAI 2022, ``azadef/ynet``,
Apache-2.0), which took it from LaMa (Suvorov et al., WACV 2022). Written from the papers and a
reading of that code; no code copied.

An FFC keeps two streams: *local* channels (ordinary convolutions) and *global* channels, whose
global-to-global path is a :class:`SpectralTransform` (a 1x1 convolution in the 2-D Fourier
domain, so that every output pixel sees the whole image).

Deviations from the Y-Net/LaMa code, all without effect on the parameter count:

* The local Fourier unit (LFU) of :class:`SpectralTransform` splits the feature map into 2 x 2
  tiles of ``(h // 2) x (w // 2)``. The official code splits *both* axes by ``h // 2``, which only
  works for square maps; here any even ``h x w`` works (odd sizes: see :class:`SpectralTransform`).
* FFTs always run in float32 (autocast is switched off inside :class:`FourierUnit`), because
  ``torch.fft`` has no bfloat16 kernels on CPU and half precision spectra lose too much.
* Unused options of the official code are left out: the learnable rotation wrapper, spectral
  positional encoding, spatial rescaling inside the Fourier unit, SE blocks, gating, groups.
* Absent streams are ``None`` instead of the integer ``0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FourierUnit", "SpectralTransform", "FFC", "FFCBNAct", "merge_local_global"]

LocalGlobal = tuple[torch.Tensor | None, torch.Tensor | None]


class FourierUnit(nn.Module):
    """Pointwise convolution in the 2-D Fourier domain.

    ``rfft2`` (orthonormal) -> real and imaginary parts as channels -> 1x1 conv -> BN -> ReLU ->
    back to complex -> ``irfft2`` at the input size.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        fft_norm: ``torch.fft`` normalisation mode.
    """

    def __init__(self, in_channels: int, out_channels: int, fft_norm: str = "ortho") -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * in_channels, 2 * out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(2 * out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.fft_norm = fft_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, C_out, H, W]``."""
        in_dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            b, _, h, w = x.shape
            spec = torch.fft.rfft2(x, norm=self.fft_norm)  # [B, C, H, W//2+1] complex
            # Real/imaginary parts interleaved per channel (c0.re, c0.im, c1.re, ...), as upstream.
            spec = torch.view_as_real(spec).permute(0, 1, 4, 2, 3).reshape(b, -1, h, w // 2 + 1)
            spec = self.relu(self.bn(self.conv(spec)))
            spec = spec.reshape(b, -1, 2, h, w // 2 + 1).permute(0, 1, 3, 4, 2).contiguous()
            out = torch.fft.irfft2(torch.view_as_complex(spec), s=(h, w), norm=self.fft_norm)
        return out.to(in_dtype) if in_dtype != torch.float32 else out


class SpectralTransform(nn.Module):
    """Global-to-global path of an FFC: 1x1 conv, Fourier unit (+ local Fourier unit), 1x1 conv.

    The local Fourier unit (LFU) takes the first quarter of the channels, cuts the map into
    2 x 2 tiles of ``(h // 2) x (w // 2)``, stacks the tiles on the channel axis, applies a
    :class:`FourierUnit` and tiles the result back 2 x 2. For odd ``h`` or ``w`` the last row or
    column is not covered by a tile and the tiled output is edge-replicated there (the official
    code has no odd-size behaviour; :class:`~octseg.models.wrappers.PadToDivisor` keeps Y-Net's
    maps even anyway).

    Args:
        in_channels: input channels.
        out_channels: output channels; ``out_channels // 2`` must be divisible by 4 when
            ``enable_lfu`` is set.
        stride: 1, or 2 to average-pool first.
        enable_lfu: add the local Fourier unit.

    Raises:
        ValueError: if ``stride`` is not 1 or 2, or the LFU channel split is impossible.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, enable_lfu: bool = True
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"SpectralTransform stride must be 1 or 2, got {stride}.")
        hidden = out_channels // 2
        if enable_lfu and hidden % 4 != 0:
            raise ValueError(
                f"The local Fourier unit needs out_channels // 2 divisible by 4, got "
                f"out_channels={out_channels}; change the channel count or set enable_lfu=False."
            )
        self.downsample = nn.AvgPool2d(kernel_size=2, stride=2) if stride == 2 else nn.Identity()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(hidden, hidden)
        self.lfu = FourierUnit(hidden, hidden) if enable_lfu else None
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)

    def _local_fourier(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        th, tw = h // 2, w // 2
        quarter = x[:, : c // 4, : 2 * th, : 2 * tw]
        # Tiles ordered (top-left, bottom-left, top-right, bottom-right) on the channel axis.
        tiles = torch.cat(torch.split(quarter, th, dim=-2), dim=1)
        tiles = torch.cat(torch.split(tiles, tw, dim=-1), dim=1)
        out = self.lfu(tiles).repeat(1, 1, 2, 2)
        if out.shape[-2:] != (h, w):
            out = F.pad(out, (0, w - 2 * tw, 0, h - 2 * th), mode="replicate")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]``."""
        x = self.conv1(self.downsample(x))
        out = x + self.fu(x)
        if self.lfu is not None:
            out = out + self._local_fourier(x)
        return self.conv2(out)


class FFC(nn.Module):
    """Fast Fourier convolution with local and global channel streams.

    ``y_l = conv_l2l(x_l) + conv_g2l(x_g)``, ``y_g = conv_l2g(x_l) + spectral(x_g)``, where the
    global share of the channels is ``ratio_gin`` at the input and ``ratio_gout`` at the output
    (``int(channels * ratio)`` global channels). Paths whose input or output stream is empty
    are absent.

    Args:
        in_channels: total input channels.
        out_channels: total output channels.
        kernel_size: kernel of the three spatial convolutions.
        ratio_gin: global share of the input channels, in ``[0, 1)``.
        ratio_gout: global share of the output channels, in ``[0, 1)``.
        stride: 1 or 2.
        padding: padding of the spatial convolutions.
        dilation: dilation of the spatial convolutions.
        bias: bias of the spatial convolutions.
        enable_lfu: use the local Fourier unit in the spectral path.
        padding_mode: padding mode of the spatial convolutions (upstream: ``"reflect"``).

    Raises:
        ValueError: if a ratio is outside ``[0, 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        enable_lfu: bool = True,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__()
        for name, ratio in (("ratio_gin", ratio_gin), ("ratio_gout", ratio_gout)):
            if not 0.0 <= ratio < 1.0:
                raise ValueError(f"FFC {name} must be in [0, 1), got {ratio}.")
        in_g = int(in_channels * ratio_gin)
        in_l = in_channels - in_g
        out_g = int(out_channels * ratio_gout)
        out_l = out_channels - out_g
        self.in_split = (in_l, in_g)
        self.out_split = (out_l, out_g)

        def conv(cin: int, cout: int) -> nn.Conv2d | None:
            if cin == 0 or cout == 0:
                return None
            return nn.Conv2d(
                cin,
                cout,
                kernel_size,
                stride,
                padding,
                dilation,
                bias=bias,
                padding_mode=padding_mode,
            )

        self.convl2l = conv(in_l, out_l)
        self.convl2g = conv(in_l, out_g)
        self.convg2l = conv(in_g, out_l)
        self.convg2g = (
            SpectralTransform(in_g, out_g, stride, enable_lfu) if in_g and out_g else None
        )

    def forward(self, x: torch.Tensor | LocalGlobal) -> LocalGlobal:
        """Maps ``(x_l, x_g)`` (or a plain local tensor) to ``(y_l, y_g)``; empty streams are
        None."""
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        y_l = _sum_present(_apply(self.convl2l, x_l), _apply(self.convg2l, x_g))
        y_g = _sum_present(_apply(self.convl2g, x_l), _apply(self.convg2g, x_g))
        return y_l, y_g


class FFCBNAct(nn.Module):
    """:class:`FFC` followed by BatchNorm and an activation on each non-empty stream.

    Args:
        in_channels: total input channels.
        out_channels: total output channels.
        kernel_size: spatial kernel size.
        ratio_gin: global share of the input channels.
        ratio_gout: global share of the output channels.
        activation: activation class applied after BatchNorm, or ``None`` for none. Y-Net's
            spectral encoder uses none (the upstream default ``nn.Identity``).
        **ffc_kwargs: further :class:`FFC` arguments (stride, padding, ...).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        activation: type[nn.Module] | None = None,
        **ffc_kwargs: object,
    ) -> None:
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, **ffc_kwargs)
        out_l, out_g = self.ffc.out_split
        self.bn_l = nn.BatchNorm2d(out_l) if out_l else None
        self.bn_g = nn.BatchNorm2d(out_g) if out_g else None
        self.act_l = activation() if activation is not None and out_l else None
        self.act_g = activation() if activation is not None and out_g else None

    def forward(self, x: torch.Tensor | LocalGlobal) -> LocalGlobal:
        """Maps ``(x_l, x_g)`` to normalised, activated ``(y_l, y_g)``."""
        y_l, y_g = self.ffc(x)
        y_l = _apply(self.act_l, _apply(self.bn_l, y_l), passthrough=True)
        y_g = _apply(self.act_g, _apply(self.bn_g, y_g), passthrough=True)
        return y_l, y_g


def merge_local_global(x: LocalGlobal) -> torch.Tensor:
    """Concatenates the non-empty streams of ``(x_l, x_g)`` on the channel axis (local first).

    Raises:
        ValueError: if both streams are empty.
    """
    parts = [t for t in x if t is not None]
    if not parts:
        raise ValueError("Both FFC streams are empty; nothing to merge.")
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _apply(
    module: nn.Module | None, x: torch.Tensor | None, passthrough: bool = False
) -> torch.Tensor | None:
    """``module(x)``; None when the input is None, or (``passthrough``) ``x`` when no module."""
    if x is None:
        return None
    if module is None:
        return x if passthrough else None
    return module(x)


def _sum_present(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b
