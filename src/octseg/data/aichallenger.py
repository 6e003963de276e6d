"""AI-Challenger 2018 retinal edema segmentation: official release to OCTSeg's prepared layout.

Release layout (three archives, extracted side by side or one of them; any folder above them)::

    Edema_trainingset/original_images/<VOL>.img/1.bmp .. 128.bmp      <VOL>.img is a folder
    Edema_trainingset/label_images/<VOL>_labelMark/1.bmp .. 128.bmp
    Edema_validationset/{original_images, label_images, groundtruth}/...
    Edema_testset/original_images/...                                  labels not released
    <VOL> = <PatientID>_MacularCube512x128_<date>_<time>_<OD|OS>_sn<serial>_cube_z

Each BMP is one B-scan of a Cirrus 512 x 128 macular cube, 1024 rows x 512 columns. Label BMPs
hold 0 background, 255 retinal edema area (REA), 191 subretinal fluid (SRF), 128 pigment
epithelial detachment (PED); OCTSeg's labels are 0 background, 1 REA, 2 SRF, 3 PED (the order
of ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation@9109583 ``data/seg_transforms.py``).
Any other label value is refused. Volumes of the test set (no label folder) are prepared
unlabelled. ``groundtruth/`` (per-volume arrays of the same labels) is not read: the BMPs are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from octseg.data.base import BScanRecord
from octseg.data.image_sets import find_parts
from octseg.data.prepared import PreparedWriter, PrepareSummary
from octseg.data.release import Release, check_same_shape, map_values
from octseg.data.splits import PARTS, load_split

__all__ = [
    "LABEL_VALUES",
    "SETS",
    "SPACING_UM",
    "labels_from_bmp",
    "prepare_aichallenger",
]

log = logging.getLogger(__name__)

#: release set folder -> OCTSeg part.
SETS = {"Edema_trainingset": "train", "Edema_validationset": "val", "Edema_testset": "test"}
#: grey value in the label BMPs -> OCTSeg label (0 stays background).
LABEL_VALUES = {0: 0, 255: 1, 191: 2, 128: 3}
#: (axial, lateral, between B-scans) micrometres of a Cirrus 6 x 6 x 2 mm cube sampled
#: 1024 x 512 x 128: 2000/1024, 6000/512, 6000/128. The release states no spacing
#: (unconfirmed; docs/datasets.md).
SPACING_UM = (2000 / 1024, 6000 / 512, 6000 / 128)
_SET = "(Edema_trainingset|Edema_validationset|Edema_testset)"
_IMAGE = re.compile(rf"(?:^|/){_SET}/original_images/([^/]+)\.img/(\d+)\.bmp$", re.IGNORECASE)
_LABEL = re.compile(rf"(?:^|/){_SET}/label_images/([^/]+)_labelMark/(\d+)\.bmp$", re.IGNORECASE)
_EYE = re.compile(r"_(OD|OS)_")
_WHAT = "the AI-Challenger 2018 folder (or .zip) holding Edema_trainingset and/or the other sets"
_EXPECTED = "Edema_trainingset/original_images/<VOL>.img/<n>.bmp (and the other sets)"


def labels_from_bmp(values: np.ndarray, where: str) -> np.ndarray:
    """Maps a label BMP's grey values (0, 255, 191, 128) to OCTSeg labels 0..3.

    Raises:
        ValueError: naming ``where`` and the values found, for any other value.
    """
    return map_values(values, LABEL_VALUES, where, "0 background, 255 REA, 191 SRF, 128 PED")


def _canonical_set(name: str) -> str:
    return next(s for s in SETS if s.lower() == name.lower())


def _find_volumes(
    release: Release,
) -> dict[str, tuple[str, dict[int, str], dict[int, str] | None]]:
    """``{volume: (set, {n: image file}, {n: label file} or None)}``."""
    images = find_parts(
        release.names, _IMAGE, "AI-Challenger 2018", _EXPECTED,
        wrong_level=lambda f: re.search(r"(^|/)[^/]+\.img/\d+\.bmp$", f, re.IGNORECASE)
        is not None,
    )  # fmt: skip
    volumes: dict[str, tuple[str, dict[int, str], dict[int, str] | None]] = {}
    for path, m in images:
        entry = volumes.setdefault(m.group(2), (_canonical_set(m.group(1)), {}, None))
        if entry[0] != _canonical_set(m.group(1)):
            raise ValueError(
                f"Volume {m.group(2)} is in both {entry[0]} and {m.group(1)} of "
                f"{release.source}; the sets must be disjoint."
            )
        entry[1][int(m.group(3))] = path
    for f in release.names:
        m = _LABEL.search(f)
        if m is None:
            continue
        if m.group(2) not in volumes:
            raise ValueError(
                f"{release.where(f)} labels volume {m.group(2)}, which has no "
                f"original_images/{m.group(2)}.img folder."
            )
        set_name, imgs, labels = volumes[m.group(2)]
        labels = {} if labels is None else labels
        labels[int(m.group(3))] = f
        volumes[m.group(2)] = (set_name, imgs, labels)
    return volumes


def _read_volume(
    release: Release,
    volume: str,
    images: dict[int, str],
    labels: dict[int, str] | None,
) -> list[BScanRecord]:
    numbers = sorted(images)
    if numbers != list(range(1, len(numbers) + 1)):
        gaps = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        raise ValueError(
            f"Volume {volume} in {release.source}: B-scans {gaps} are missing (expected "
            f"1.bmp..{numbers[-1]}.bmp without gaps); the release is incomplete."
        )
    if labels is not None and sorted(labels) != numbers:
        raise ValueError(
            f"Volume {volume}: label_images/{volume}_labelMark has B-scans {sorted(labels)[:5]}"
            f"... ({len(labels)}) but original_images has 1..{len(numbers)}; each B-scan "
            "needs its label BMP."
        )
    subject = volume.split("_")[0]
    records = []
    for n in numbers:
        where = release.where(images[n])
        image = release.read_grey(images[n], colour="luma")
        mask = None
        if labels is not None:
            label_where = release.where(labels[n])
            mask = labels_from_bmp(release.read_grey(labels[n]), label_where)
            check_same_shape(mask, image, label_where, where)
        records.append(
            BScanRecord(image, mask, f"{volume}_{n:03d}", volume, n - 1, SPACING_UM, subject)
        )
    return records


def prepare_aichallenger(
    source: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    sets: Sequence[str] = tuple(SETS.values()),
) -> PrepareSummary:
    """Prepares AI-Challenger 2018 retinal edema into ``out_dir`` (``dataset=aichallenger``).

    Args:
        source: the folder (or .zip) holding ``Edema_trainingset`` and/or the other sets.
        out_dir: output folder, ``<paths.data_dir>/aichallenger``.
        overwrite: replace a folder prepared with other settings.
        sets: the parts to prepare (``train``, ``val``, ``test``).

    Returns:
        The summary; volumes of the official split not in the release are listed as missing.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: on a wrong folder level, B-scans without labels, labels outside the
            documented values, image/label size mismatches or unreadable BMPs.
    """
    unknown = sorted(set(sets) - set(PARTS))
    if unknown:
        raise ValueError(f"sets {unknown} unknown; choose from {list(PARTS)}.")
    with Release(source, _WHAT) as release:
        volumes = _find_volumes(release)
        writer = PreparedWriter(
            out_dir, "aichallenger", {"sets": sorted(sets)}, num_classes=len(LABEL_VALUES),
            overwrite=overwrite,
        )  # fmt: skip
        for volume, (set_name, images, labels) in sorted(volumes.items()):
            part = SETS[set_name]
            if part not in sets:
                continue
            if labels is None and part != "test":
                raise ValueError(
                    f"Volume {volume} of {set_name} has no label_images/{volume}_labelMark "
                    f"folder in {release.source}; the training and validation sets are labelled."
                )
            if writer.has_volume(volume):
                writer.skip_volume(volume)
                continue
            eye = _EYE.search(volume)
            meta = {"set": set_name, "part": part, "eye": eye.group(1) if eye else None,
                    "labelled": labels is not None}  # fmt: skip
            writer.write_volume(_read_volume(release, volume, images, labels), meta=meta)
        official = load_split("official", 0, dataset="aichallenger")
        expected = [v for part in sets for v in official[part]]
        missing = sorted(set(expected) - set(volumes))
        return writer.finish(missing=missing)
