"""Training augmentation for OCT B-scans, built with albumentations from config
(``conf/augmentation/{none,light,oct}.yaml``).

Image and mask always go through the same geometric transform (mask with nearest-neighbour
interpolation; pixels shifted in from outside get ``ignore_index`` in the mask). Intensity
transforms touch the image only. Albumentations 2 keeps its own random generators inside
``Compose``; :class:`TorchSeededTransform` re-seeds them from torch's seed and the process rank
in each process and DataLoader worker, so a run is reproducible from the global seed and neither
workers nor DDP ranks repeat each other's augmentations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import torch

from octseg.data.seeding import derive_seed, process_rank

__all__ = ["build_augmentation", "TorchSeededTransform"]


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (-abs(float(value)), abs(float(value)))
    values = tuple(float(v) for v in value)
    if len(values) != 2:
        raise ValueError(f"augmentation.{name} must be a number or [low, high], got {value!r}.")
    return values  # type: ignore[return-value]


def build_augmentation(
    hflip_p: float = 0.5,
    vflip_p: float = 0.0,
    affine_p: float = 0.0,
    scale: Sequence[float] = (0.9, 1.1),
    translate: float = 0.05,
    rotate: float = 5.0,
    brightness: float = 0.0,
    contrast: float = 0.0,
    brightness_contrast_p: float = 0.5,
    gamma: Sequence[float] | None = None,
    gamma_p: float = 0.5,
    speckle: Sequence[float] | None = None,
    speckle_p: float = 0.5,
    elastic_p: float = 0.0,
    elastic_alpha: float = 30.0,
    elastic_sigma: float = 6.0,
    crop_size: Sequence[int] | None = None,
    crop_on_labels: bool = False,
    ignore_index: int = 255,
    seed: int | None = None,
) -> A.Compose:
    """Builds the training pipeline; every stage with probability 0 (or unset) is left out.

    Args:
        hflip_p: probability of a left-right flip (anatomically plausible: left/right eye).
        vflip_p: probability of an up-down flip (not anatomical for OCT; off by default).
        affine_p: probability of a small affine (``scale`` range, ``translate`` fraction of the
            size, ``rotate`` degrees).
        scale: affine scale range ``[low, high]``.
        translate: largest shift as a fraction of height and width.
        rotate: largest rotation in degrees.
        brightness: brightness change limit (fraction of 255), 0 = none.
        contrast: contrast change limit, 0 = none.
        brightness_contrast_p: probability of the brightness/contrast change.
        gamma: gamma range in percent, e.g. ``[80, 120]``, or None.
        gamma_p: probability of the gamma change.
        speckle: multiplicative per-pixel noise range, e.g. ``[0.85, 1.15]`` (speckle-like), or
            None.
        speckle_p: probability of the noise.
        elastic_p: probability of an elastic deformation (``elastic_alpha``, ``elastic_sigma``).
        elastic_alpha: elastic displacement scale in pixels.
        elastic_sigma: smoothness of the elastic field in pixels.
        crop_size: ``[height, width]`` of a random training crop (padded first where the B-scan
            is smaller, image with 0 and mask with ``ignore_index``), or None for full B-scans.
        crop_on_labels: place each crop around a random labelled pixel (a label other than 0
            and ``ignore_index``; albumentations' ``CropNonEmptyMaskIfExists``) instead of
            anywhere. For sparse labels (active learning reveals scattered superpixels), where
            most random crops would hold almost no labelled pixel; a mask without any labelled
            pixel gets a random crop.
        ignore_index: mask value for pixels with no label (padding, shifted-in borders).
        seed: seed of the pipeline's own generators (re-seeded per process by
            :class:`TorchSeededTransform` in the DataModules).

    Returns:
        An ``albumentations.Compose`` called as ``pipeline(image=uint8 array, mask=array)``.

    Raises:
        ValueError: if a range or ``crop_size`` is malformed.
    """
    border = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": ignore_index}
    stages: list[A.BasicTransform] = []
    if hflip_p > 0:
        stages.append(A.HorizontalFlip(p=hflip_p))
    if vflip_p > 0:
        stages.append(A.VerticalFlip(p=vflip_p))
    if affine_p > 0:
        stages.append(
            A.Affine(
                scale=tuple(float(s) for s in scale),
                translate_percent=_pair(translate, "translate"),
                rotate=_pair(rotate, "rotate"),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=affine_p,
                **border,
            )
        )
    if elastic_p > 0:
        stages.append(
            A.ElasticTransform(
                alpha=elastic_alpha,
                sigma=elastic_sigma,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=elastic_p,
                **border,
            )
        )
    if brightness > 0 or contrast > 0:
        stages.append(
            A.RandomBrightnessContrast(
                brightness_limit=brightness, contrast_limit=contrast, p=brightness_contrast_p
            )
        )
    if gamma is not None:
        stages.append(A.RandomGamma(gamma_limit=tuple(float(g) for g in gamma), p=gamma_p))
    if speckle is not None:
        low, high = (float(s) for s in speckle)
        stages.append(A.MultiplicativeNoise(multiplier=(low, high), elementwise=True, p=speckle_p))
    if crop_size is not None:
        size = [int(s) for s in crop_size]
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"augmentation.crop_size must be [height, width], got {crop_size!r}.")
        if crop_on_labels:
            stages.append(A.PadIfNeeded(min_height=size[0], min_width=size[1], **border))
            stages.append(
                A.CropNonEmptyMaskIfExists(
                    height=size[0], width=size[1], ignore_values=[ignore_index]
                )
            )
        else:
            stages.append(
                A.RandomCrop(height=size[0], width=size[1], pad_if_needed=True, **border)
            )
    elif crop_on_labels:
        raise ValueError(
            "augmentation.crop_on_labels=true needs augmentation.crop_size (the crop to place)."
        )
    return A.Compose(stages, seed=seed)


class TorchSeededTransform:
    """Wraps an albumentations ``Compose`` (or any callable with ``set_random_seed``) so that its
    generators are seeded from ``(base seed, process rank, DataLoader worker, epoch)``.

    The base seed is ``torch.initial_seed()`` when the wrapper is built (the global seed: the
    DataModule builds it after ``seed_everything``); workers receive the wrapper with it. The
    epoch is set by the DataModule's sampler (:meth:`set_epoch`). An epoch's augmentation then
    depends on nothing else, so the streams differ per rank and worker, and a run resumed at an
    epoch boundary replays exactly the uninterrupted run's augmentation (with persistent
    DataLoader workers the epoch reaches workers only when they start: exact with
    ``num_workers=0``).

    Args:
        transform: the pipeline, called as ``transform(image=..., mask=...)``.
        rank: the global process rank mixed into the seed; None reads
            :func:`~octseg.data.seeding.process_rank` at re-seeding time.
    """

    def __init__(self, transform: Callable[..., dict[str, Any]], rank: int | None = None) -> None:
        self.transform = transform
        self.rank = rank
        self.base_seed = torch.initial_seed()
        self.epoch = 0
        self._seeded_for: tuple[int, int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Re-seeds the stream for ``epoch`` from the next call on."""
        self.epoch = int(epoch)

    def __call__(self, **data: Any) -> dict[str, Any]:
        info = torch.utils.data.get_worker_info()
        rank = process_rank() if self.rank is None else self.rank
        key = (rank, -1 if info is None else info.id, self.epoch)
        if key != self._seeded_for and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(derive_seed(self.base_seed, *key))
            self._seeded_for = key
        return self.transform(**data)

    def __repr__(self) -> str:
        return f"TorchSeededTransform({self.transform!r})"
