"""Y-Net: a spatial and a spectral (fast Fourier convolution) encoder feeding one U-Net decoder.

Farshad A., Yeganeh Y., Gehlbach P., Navab N., "Y-Net: A Spatiospectral Dual-Encoder Network
for Medical Image Segmentation", MICCAI 2022, arXiv:2204.07613. Official code: ``azadef/ynet``
(Apache-2.0), class ``YNet_general``; this file is written from the paper and a reading of it.

Structure (``base_channels`` f = 32): a spatial encoder of four ``(conv3x3-BN-ReLU) x 2`` blocks
(f, 2f, 4f, 4f) with max-pooling; a spectral encoder of four 1x1 :class:`FFCBNAct` stages with
the same widths, half of the channels global (``ratio_in`` 0.5), or, with ``ffc=False``, a
second spatial encoder; the two 1/16-resolution maps are merged (8f channels) into a 16f
bottleneck; the decoder takes skips from the spatial encoder only (or from both with
``skip_ffc``). Parameters at 1 input channel and 9 classes, as in the official code:
6,925,353 (FFC), 7,459,785 (``ffc=False``), 7,413,801 (FFC + ``skip_ffc``).

Deviations from the official code:

* **Raw logits** instead of ``Softmax2d`` probabilities.
* **Non-square inputs**: the local Fourier unit splits H by ``h // 2`` and W by ``w // 2``
  (upstream: both by ``h // 2``, so only square maps work; see
  :mod:`octseg.models.blocks.ffc`). Any H x W that is a multiple of 16 works, others through
  :class:`~octseg.models.wrappers.PadToDivisor`.
* **Bottleneck merge.** Upstream (``cat_merge=True``) flattens both maps, stacks them as two
  columns and reshapes to ``[B, 8f, h, w]``: an element-wise interleaving that puts features of
  neighbouring pixels and of both encoders into each channel, so the merged map is not spatially
  aligned with either input. The default here, ``merge="concat"``, is a proper channel
  concatenation (spatial encoder first); ``merge="official_interleave"`` reproduces upstream
  exactly. Neither has parameters, so the counts above hold for both.
* ``ratio_in`` must lie strictly between 0 and 1 with ``ffc=True`` (upstream's 0/1 branches
  degenerate to a spatial-only or global-only encoder and are not supported).
* The optional focal-frequency loss of the official training script (weight 0 by default,
  computed on argmax one-hots, so without gradient) is not part of the model.
* ``dropout`` (default 0, i.e. absent as upstream): channel dropout (``Dropout2d``) before the
  1x1 head. Y-Net has no dropout layer, so EdgeAL's Monte-Carlo dropout (Kadir et al., MICCAI
  2023, official backbone ``y_net_gen_ffc``) would repeat one deterministic pass; the
  ``edgeal_duke`` experiment sets it to EdgeAL's ``MC_DROPOUT_RATE`` 0.25. No parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from octseg.models.blocks.conv import DoubleConv, UpConcat
from octseg.models.blocks.ffc import FFCBNAct, merge_local_global

__all__ = ["YNet", "MERGE_MODES"]

MERGE_MODES = ("concat", "official_interleave")


def _interleave_merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Upstream's ``cat_merge``: element-wise interleaving of two equally sized maps."""
    bsz, c_a, h, w = a.shape
    return torch.stack((a.reshape(-1), b.reshape(-1)), dim=1).reshape(bsz, c_a + b.shape[1], h, w)


class YNet(nn.Module):
    """Spatio-spectral dual-encoder U-Net.

    Args:
        in_channels: image channels (1 for OCT).
        num_classes: output classes, background included.
        base_channels: width ``f`` of the first level.
        ratio_in: share of global (spectral) channels in the FFC stages, in ``(0, 1)``.
        ffc: spectral FFC encoder (``True``, the paper's Y-Net) or a second spatial encoder.
        skip_ffc: also pass the second encoder's features through the skip connections.
        merge: bottleneck merge, ``"concat"`` (default, spatially correct) or
            ``"official_interleave"`` (upstream behaviour, for exact reproduction).
        dropout: ``Dropout2d`` rate before the head (0: none, as upstream; EdgeAL's MC
            dropout needs one).

    Raises:
        ValueError: for an unknown ``merge`` or ``ratio_in`` outside ``(0, 1)`` with ``ffc``.

    Examples::

        >>> net = YNet(in_channels=1, num_classes=9)
        >>> net(torch.zeros(1, 1, 64, 96)).shape
        torch.Size([1, 9, 64, 96])
    """

    size_divisor = 16
    requires_square = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        base_channels: int = 32,
        ratio_in: float = 0.5,
        ffc: bool = True,
        skip_ffc: bool = False,
        merge: str = "concat",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if merge not in MERGE_MODES:
            raise ValueError(f"YNet merge must be one of {MERGE_MODES}, got {merge!r}.")
        if ffc and not 0.0 < ratio_in < 1.0:
            raise ValueError(
                f"YNet ratio_in must be in (0, 1) with ffc=True, got {ratio_in}; "
                "use ffc=false for a purely spatial second encoder."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"YNet dropout must be in [0, 1), got {dropout} (model.net.dropout).")
        self.ffc = ffc
        self.skip_ffc = skip_ffc
        self.merge = merge
        f = base_channels
        widths = [f, 2 * f, 4 * f, 4 * f]
        ins = [in_channels] + widths[:-1]
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.spatial = nn.ModuleList([DoubleConv(i, o) for i, o in zip(ins, widths, strict=True)])
        if ffc:
            self.spectral = nn.ModuleList(
                [
                    FFCBNAct(
                        i,
                        o,
                        kernel_size=1,
                        ratio_gin=0.0 if k == 0 else ratio_in,
                        ratio_gout=ratio_in,
                    )
                    for k, (i, o) in enumerate(zip(ins, widths, strict=True))
                ]
            )
        else:
            self.spectral = nn.ModuleList(
                [DoubleConv(i, o) for i, o in zip(ins, widths, strict=True)]
            )
        self.bottleneck = DoubleConv(8 * f, 16 * f)
        # Decoder level k: (input, upsampled, skip, output) channels.
        skip = [2 * w if skip_ffc else w for w in widths]
        outs = [f, 2 * f, 4 * f, 8 * f]
        ins_dec = [2 * f, 4 * f, 8 * f, 16 * f]
        self.decoders = nn.ModuleList(
            [UpConcat(ins_dec[k], outs[k], skip[k], outs[k]) for k in range(4)]
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(f, num_classes, kernel_size=1)

    def _pool(self, x: torch.Tensor | tuple) -> torch.Tensor | tuple:
        if isinstance(x, tuple):
            return tuple(None if t is None else self.pool(t) for t in x)
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, K, H, W)`` raw logits; H and W multiples of 16."""
        skips_a, skips_b = [], []
        a, b = x, x
        for k in range(4):
            a = self.spatial[k](a)
            b = self.spectral[k](b)
            skips_a.append(a)
            skips_b.append(merge_local_global(b) if self.ffc else b)
            a, b = self.pool(a), self._pool(b)
        b = merge_local_global(b) if self.ffc else b
        if self.merge == "concat":
            merged = torch.cat((a, b), dim=1)
        else:
            merged = _interleave_merge(a, b)
        y = self.bottleneck(merged)
        for k in reversed(range(4)):
            skips = (skips_a[k], skips_b[k]) if self.skip_ffc else (skips_a[k],)
            y = self.decoders[k](y, *skips)
        return self.head(self.dropout(y))
