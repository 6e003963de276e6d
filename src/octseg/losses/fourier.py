"""FourierNet's Fourier-descriptor (FD) targets and their regression loss.

Cansiz S., Kesim C., Bektas S.N., Kulali Z., Hasanreisoglu M., Gunduz-Demir C., "FourierNet:
Shape-Preserving Network for Henle's Fiber Layer Segmentation in Optical Coherence Tomography
Images", IEEE Journal of Biomedical and Health Informatics, 2023 (venue and year as recorded in
the project's methods catalogue; the paper text was not available offline, so volume, pages and
doi are not given here). No official code was found; the Keras seed files described in the
catalogue (``calculateFourierDescriptors.py``, ``trainTestModels.py``, ``deepModels.py``) were
read to understand the target definition. Written from that reading; nothing copied.

**Targets.** For every class ``c`` of ``classes`` the binary region ``mask == c`` is peeled like
an onion: the border pixels of what remains are traced as closed 8-connected contours
(OpenCV ``findContours``, every contour, no approximation), each contour gets the amplitudes
``|A_1| .. |A_N|`` of the first ``N`` harmonics of its centre-distance signature, its pixels are
painted with them and removed, until the region is empty. With ``r_i`` the distance of contour
point ``i`` to the contour's centroid, ``delta_i = r_i - r_{i+1}`` and ``l_i`` the arc length at
which that step happens (``L`` the perimeter)::

    a_k = 1/(k pi) * sum_i delta_i sin(2 pi k l_i / L),  b_k = -1/(k pi) * sum_i delta_i cos(...)
    |A_k| = sqrt(a_k^2 + b_k^2)

which is the amplitude (in pixels) of harmonic ``k`` of the radius as a function of arc length:
0 for a circle, ``~(a - b)/2`` at ``k = 2`` for an ellipse with semi-axes ``a, b``, and 0 at every
odd ``k`` for a centrally symmetric shape. Each of the ``len(classes) * N`` maps (class-major:
class 1 harmonics 1..N, then class 2, ...) is then z-scored over the scan's annotated pixels.

Deviations from the seed code (all deliberate; the paper is binary and gives the formula only):

* **Multi-class**: one group of ``N`` maps per class in ``classes`` (the paper: Henle's fibre
  layer only, ``classes=[1]``). Pixels of other classes are 0 in a class's maps, as background
  is in the paper's binary maps.
* **Safe normalisation**: ``(m - mean) / std`` where ``std > 1e-6`` px, all zeros otherwise. The
  seed divides by ``std`` unconditionally, which gives NaN targets for empty masks and for
  symmetric shapes whose map is all zeros (e.g. the first harmonic of a rectangle); here those
  maps become exact zeros. (A threshold, not ``std + eps``: a small class spread over a whole
  B-scan has a small ``std``, e.g. 0.015 px for Duke's fluid, which an additive ``eps`` would
  visibly shrink; float rounding noise of vanishing harmonics is ~1e-13 px.) Statistics
  are over annotated pixels only (the seed: all pixels, there were no unannotated ones), so batch
  padding and ``ignore_index`` columns do not change a scan's targets.
* **Step position**: ``l_i`` is the arc length at the middle of step ``i`` (the seed: at its end).
  This makes the amplitudes exactly invariant to the tracing direction, hence to mirroring
  (measured difference to the seed's placement: < 0.1 % on shapes of 30-60 px).
* **Image border**: the mask is padded with one background pixel before tracing, so a region
  touching the border is traced like any other (and padding by the batch collate changes nothing).
* **Ignored pixels** (``ignore_index``) count as outside every class: a layer cut by untraced
  columns gets a contour along the cut.
* Computed on the fly from the batch mask (after augmentation, so always aligned with the
  image) and cached by mask content, instead of precomputed files (seed defects 4-6 and 9 in the
  catalogue: placeholder path, wrong file names, endless loop with OpenCV >= 4, Python loops).

**Loss** (the seed's Keras ``compile``): mean squared error of each FD map, summed over maps
(one Keras output per map, all loss weights 1), plus categorical cross-entropy of the
segmentation (``conf/loss/fouriernet.yaml``). Here the MSE is averaged over annotated pixels.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from octseg.models.base import SegOutput

__all__ = [
    "contour_harmonic_amplitudes",
    "fourier_descriptor_maps",
    "normalise_fd_maps",
    "fd_targets",
    "FDTargetCache",
    "FourierDescriptorLoss",
]

NORM_EPS = 1e-6  # px: a map whose std is below this is constant up to rounding noise.


def contour_harmonic_amplitudes(contours: Sequence[np.ndarray], num_harmonics: int) -> np.ndarray:
    """Harmonic amplitudes ``|A_1..A_N|`` of the centre-distance signature of each contour.

    All contours are processed at once (per-contour sums through ``np.bincount``).

    Args:
        contours: closed point chains, each ``[P, 2]`` (or OpenCV's ``[P, 1, 2]``) in pixels.
        num_harmonics: ``N``, the number of harmonics.

    Returns:
        ``[len(contours), N]`` float64 amplitudes in pixels (0 for a single-point contour).
    """
    n = len(contours)
    if n == 0:
        return np.zeros((0, num_harmonics))
    lengths = np.array([len(c) for c in contours])
    pts = np.concatenate([np.asarray(c).reshape(-1, 2) for c in contours]).astype(np.float64)
    cid = np.repeat(np.arange(n), lengths)
    starts = np.cumsum(lengths) - lengths
    centre = np.stack(
        [np.bincount(cid, pts[:, d], minlength=n) / lengths for d in range(2)], axis=1
    )
    nxt = np.arange(len(pts)) + 1
    nxt[starts + lengths - 1] = starts  # each chain is closed
    radius = np.hypot(*(pts - centre[cid]).T)
    delta = radius - radius[nxt]
    step = np.hypot(*(pts - pts[nxt]).T)
    perimeter = np.bincount(cid, step, minlength=n)
    cum = np.cumsum(step)
    # Arc length at the middle of each step, counted from the chain's first point.
    pos = cum - (cum[starts] - step[starts])[cid] - step / 2
    safe_perimeter = np.where(perimeter > 0, perimeter, 1.0)[cid]
    k = np.arange(1, num_harmonics + 1)[:, None]
    theta = 2 * np.pi * k * pos[None] / safe_perimeter[None]  # [N, P]
    a = np.stack([np.bincount(cid, row, minlength=n) for row in delta * np.sin(theta)])
    b = -np.stack([np.bincount(cid, row, minlength=n) for row in delta * np.cos(theta)])
    amps = np.hypot(a, b) / (k * np.pi)  # [N, n]
    amps[:, perimeter == 0] = 0.0
    return amps.T


def _onion_peel(region: np.ndarray, num_harmonics: int) -> np.ndarray:
    """FD amplitude maps ``[N, H, W]`` of one binary region by onion peeling."""
    h, w = region.shape
    out = np.zeros((num_harmonics, h, w))
    if not region.any():
        return out
    rows, cols = np.nonzero(region)
    y0, x0 = rows.min(), cols.min()
    # One background pixel around the bounding box: border-touching regions trace normally.
    remaining = np.zeros((rows.max() - y0 + 3, cols.max() - x0 + 3), np.uint8)
    remaining[rows - y0 + 1, cols - x0 + 1] = 1
    while remaining.any():
        contours, _ = cv2.findContours(remaining, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        amps = contour_harmonic_amplitudes(contours, num_harmonics)
        pts = np.concatenate([c.reshape(-1, 2) for c in contours])
        owner = np.repeat(np.arange(len(contours)), [len(c) for c in contours])
        xs, ys = pts[:, 0], pts[:, 1]
        # A pixel on two contours of the same peel keeps the later one's value (as the seed).
        out[:, ys + y0 - 1, xs + x0 - 1] = amps[owner].T
        remaining[ys, xs] = 0  # every region has an outer contour, so each peel shrinks it
    return out


def fourier_descriptor_maps(
    mask: np.ndarray, classes: Sequence[int], num_harmonics: int = 1
) -> np.ndarray:
    """Raw FD amplitude maps of a label map, one group of ``N`` harmonics per class.

    Args:
        mask: integer labels ``[H, W]``.
        classes: labels that get maps, in output order.
        num_harmonics: ``N`` harmonics per class.

    Returns:
        ``[len(classes) * N, H, W]`` float64, class-major; 0 outside each class.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"FD maps need a 2-D label map [H, W], got shape {mask.shape}.")
    maps = [_onion_peel(mask == c, num_harmonics) for c in classes]
    if not maps:
        return np.zeros((0, *mask.shape))
    return np.concatenate(maps)


def normalise_fd_maps(
    maps: np.ndarray, valid: np.ndarray | None = None, eps: float = NORM_EPS
) -> np.ndarray:
    """Z-scores each map over the valid pixels, ``(m - mean) / std``; 0 where invalid.

    A map whose ``std`` is at most ``eps`` (empty class, or a harmonic that vanishes by symmetry)
    becomes all zeros instead of NaN or amplified rounding noise.

    Args:
        maps: ``[M, H, W]`` raw amplitudes.
        valid: bool ``[H, W]`` of annotated pixels (default: all).
        eps: largest standard deviation (pixels) treated as a constant map.

    Returns:
        ``[M, H, W]`` float32.
    """
    if valid is None:
        valid = np.ones(maps.shape[-2:], bool)
    out = np.zeros(maps.shape, np.float32)
    if not valid.any():
        return out
    values = maps[:, valid]  # [M, n_valid]
    mean = values.mean(axis=1, keepdims=True)
    std = values.std(axis=1, keepdims=True)
    varying = std > eps
    out[:, valid] = np.where(varying, (values - mean) / np.where(varying, std, 1.0), 0.0)
    return out


def fd_targets(
    mask: np.ndarray, classes: Sequence[int], num_harmonics: int = 1, ignore_index: int = 255
) -> np.ndarray:
    """Normalised FD regression targets ``[len(classes) * N, H, W]`` (float32) of one scan."""
    mask = np.asarray(mask)
    raw = fourier_descriptor_maps(mask, classes, num_harmonics)
    return normalise_fd_maps(raw, mask != ignore_index)


class FDTargetCache:
    """Bounded, thread-safe LRU cache of FD targets keyed by the mask's content.

    The key is a BLAKE2 digest of the mask bytes, shape and dtype plus the target settings, so
    equal masks share one entry wherever they come from and a changed (e.g. augmented) mask can
    never hit a stale one. The cache lives with the loss in the training process (DataLoader
    workers never see it); pickling or copying it (DDP spawn, ``copy.deepcopy``) gives an empty
    cache with the same bounds.

    Args:
        max_entries: most targets kept (least recently used dropped first).
        max_bytes: most bytes of targets kept.

    Raises:
        ValueError: if a bound is not positive.
    """

    def __init__(self, max_entries: int = 256, max_bytes: int = 1 << 30) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(
                f"FDTargetCache bounds must be positive, got max_entries={max_entries}, "
                f"max_bytes={max_bytes} (loss.terms.fd.cache_entries / cache_bytes)."
            )
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached targets."""
        return self._bytes

    def __getstate__(self) -> dict[str, Any]:
        return {"max_entries": self.max_entries, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_entries"], state["max_bytes"])

    @staticmethod
    def key(
        mask: np.ndarray, classes: Sequence[int], num_harmonics: int, ignore_index: int
    ) -> str:
        """Content key of a mask and the target settings."""
        mask = np.ascontiguousarray(mask)
        digest = hashlib.blake2b(mask.tobytes(), digest_size=16)
        digest.update(
            repr(
                (mask.shape, str(mask.dtype), tuple(classes), num_harmonics, ignore_index)
            ).encode()
        )
        return digest.hexdigest()

    def get(
        self, mask: np.ndarray, classes: Sequence[int], num_harmonics: int, ignore_index: int
    ) -> torch.Tensor:
        """The targets of ``mask`` (CPU float32 ``[M, H, W]``), computed once per content."""
        key = self.key(mask, classes, num_harmonics, ignore_index)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit
            self.misses += 1
        # Computed outside the lock: two threads may both compute a new mask, never block.
        value = torch.from_numpy(fd_targets(mask, classes, num_harmonics, ignore_index))
        size = value.numel() * value.element_size()
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            if size <= self.max_bytes:
                self._entries[key] = value
                self._bytes += size
                while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                    _, old = self._entries.popitem(last=False)
                    self._bytes -= old.numel() * old.element_size()
        return value


class FourierDescriptorLoss(nn.Module):
    """FourierNet's FD regression term: per-map MSE against targets made from the batch mask.

    Reads ``output.aux["fd_maps"]`` ``[B, M, H, W]``; ``M`` must equal
    ``len(classes) * num_harmonics``.

    Args:
        classes: labels with FD maps (``None``: every class but 0, from the logits' channels).
        num_harmonics: harmonics per class (the network's ``num_harmonics``).
        ignore_index: unannotated label; its pixels are excluded from the MSE and statistics.
        reduction: ``"sum"`` over maps (the seed: one Keras loss per map, weights 1) or
            ``"mean"``.
        cache_entries: bound of the target cache (entries).
        cache_bytes: bound of the target cache (bytes).

    Raises:
        ValueError: for an unknown ``reduction`` or ``num_harmonics < 1``.
    """

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        num_harmonics: int = 1,
        ignore_index: int = 255,
        reduction: str = "sum",
        cache_entries: int = 256,
        cache_bytes: int = 1 << 30,
    ) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(
                f"FourierDescriptorLoss reduction must be 'sum' or 'mean', got {reduction!r} "
                "(loss.terms.fd.reduction)."
            )
        if int(num_harmonics) < 1:
            raise ValueError(
                f"FourierDescriptorLoss num_harmonics must be >= 1, got {num_harmonics} "
                "(model.net.num_harmonics)."
            )
        self.classes = None if classes is None else [int(c) for c in classes]
        self.num_harmonics = int(num_harmonics)
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        self.cache = FDTargetCache(cache_entries, cache_bytes)

    def resolved_classes(self, num_classes: int) -> list[int]:
        """The classes with FD maps for a network with ``num_classes`` outputs."""
        return list(range(1, num_classes)) if self.classes is None else self.classes

    def targets(self, mask: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        """Normalised targets ``[B, M, H, W]`` of a batch of masks, on the masks' device."""
        masks = mask.detach().cpu().numpy()
        stacked = torch.stack(
            [self.cache.get(m, classes, self.num_harmonics, self.ignore_index) for m in masks]
        )
        return stacked.to(mask.device, non_blocking=True)

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        pred = output.aux.get("fd_maps")
        if not isinstance(pred, torch.Tensor):
            raise ValueError(
                "FourierDescriptorLoss needs the network's FD maps in SegOutput.aux['fd_maps'] "
                "(model=fouriernet); this network returned aux keys "
                f"{sorted(output.aux)}. Use another loss for this model."
            )
        classes = self.resolved_classes(output.logits.shape[1])
        expected = len(classes) * self.num_harmonics
        if pred.shape[1] != expected:
            raise ValueError(
                f"The network predicts {pred.shape[1]} FD maps but the loss expects {expected} "
                f"({len(classes)} classes {classes} x {self.num_harmonics} harmonics); set "
                "loss.terms.fd.classes / num_harmonics like model.net.fd_classes / num_harmonics."
            )
        mask = batch["mask"]
        target = self.targets(mask, classes)
        valid = (mask != self.ignore_index).unsqueeze(1).float()
        n_valid = valid.sum().clamp_min(1.0)
        per_map = ((pred.float() - target).square() * valid).sum(dim=(0, 2, 3)) / n_valid
        return per_map.sum() if self.reduction == "sum" else per_map.mean()
