"""OCTA-500 (Li et al., Medical Image Analysis 2024): the OCT B-scans and their six traced
surfaces (``GT_Layers``) to OCTSeg's prepared layout (:mod:`octseg.data.prepared`).

Release layout (folder or archive; the label root is ``Label/`` or ``GroundTruth/`` by version)::

    OCTA_6mm/OCT/<10001..10300>/<1..400>.bmp     8-bit B-scans, 640 rows (depth) x 400 A-scans
    OCTA_3mm/OCT/<10301..10500>/<1..304>.bmp     640 x 304
    Label/GT_Layers/<id>.mat                     'Layer' (6, n_bscans, width): ILM, IPL, OPL,
                                                 ISOS, RPE, BM rows per B-scan and A-scan

Volumes are found by their id (``.../OCT/<id>/``), so the subset folder's name does not matter;
the subset is the official id range. B-scans are sorted by number (natural order); B-scan
``n.bmp`` has ``bscan_index`` n - 1. Labels: region ``k`` between surface ``k-1`` and ``k``
(:mod:`octseg.data.layer_labels`): 0 vitreous, 1 ILM-IPL, 2 IPL-OPL, 3 OPL-ISOS, 4 ISOS-RPE,
5 RPE-BM, 6 below BM. Spacing from the documented fields of view (2 mm deep; 6 x 6 or 3 x 3 mm)
over the image sizes: 3.125 / 15 / 15 um (6 mm), 3.125 / 9.87 / 9.87 um (3 mm).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from octseg.data.base import BScanRecord
from octseg.data.layer_labels import surfaces_to_labels
from octseg.data.prepared import PreparedWriter, PrepareSummary
from octseg.data.release import Release, load_mat

__all__ = ["CLASS_NAMES", "SUBSETS", "SURFACE_NAMES", "find_octa500", "prepare_octa500"]

log = logging.getLogger(__name__)

#: official id ranges and fields of view (mm) of the two subsets
SUBSETS: dict[str, tuple[range, float]] = {
    "6mm": (range(10001, 10301), 6.0),
    "3mm": (range(10301, 10501), 3.0),
}
SURFACE_NAMES = ("ILM", "IPL", "OPL", "ISOS", "RPE", "BM")
CLASS_NAMES = ("vitreous", "ILM-IPL", "IPL-OPL", "OPL-ISOS", "ISOS-RPE", "RPE-BM", "choroid")
DEPTH_MM = 2.0
_ROOT = "the OCTA-500 folder (or archive) holding OCTA_6mm/ and/or OCTA_3mm/ and Label/"
_BSCAN = re.compile(r"(?:^|/)OCT/(\d{5})/(\d+)\.bmp$", re.IGNORECASE)
_LAYERS = re.compile(r"(?:^|/)GT_Layers/(\d{5})\.mat$", re.IGNORECASE)


def _subset_of(volume: int) -> str | None:
    return next((s for s, (ids, _) in SUBSETS.items() if volume in ids), None)


def find_octa500(release: Release) -> tuple[dict[int, dict[int, str]], dict[int, str]]:
    """Finds the B-scan files and surface files of every volume of a release.

    Returns:
        ``({id: {bscan_number: name}}, {id: layers_name})``.

    Raises:
        FileNotFoundError: if no ``OCT/<id>/<n>.bmp`` or no ``GT_Layers/<id>.mat`` is found,
            saying which folder level was expected.
        ValueError: if an id's surface file is found twice.
    """
    bscans: dict[int, dict[int, str]] = defaultdict(dict)
    layers: dict[int, str] = {}
    for name in release.names:
        if m := _BSCAN.search(name):
            bscans[int(m.group(1))][int(m.group(2))] = name
        elif m := _LAYERS.search(name):
            volume = int(m.group(1))
            if volume in layers:
                raise ValueError(
                    f"GT_Layers/{volume}.mat is in {release.source} twice ({layers[volume]}, "
                    f"{name}); keep one label folder (Label/ or GroundTruth/)."
                )
            layers[volume] = name
    if not bscans:
        stray = next((n for n in release.names if n.lower().endswith(".bmp")), None)
        hint = (
            f" BMPs were found at {stray!r}, so {release.source} is probably a deeper folder "
            "(OCTA_6mm/, OCT/ or a volume folder)."
            if stray
            else ""
        )
        raise FileNotFoundError(
            f"No OCT/<id>/<n>.bmp B-scan under {release.source}; expected {_ROOT} (B-scans in "
            f"OCTA_6mm/OCT/<10001..10300>/ and OCTA_3mm/OCT/<10301..10500>/).{hint}"
        )
    if not layers:
        raise FileNotFoundError(
            f"No GT_Layers/<id>.mat under {release.source}; expected {_ROOT} (surfaces in "
            "Label/GT_Layers/ or GroundTruth/GT_Layers/). If you passed OCTA_6mm/ itself, pass "
            "the folder above it."
        )
    return dict(bscans), layers


def _read_volume(
    release: Release, volume: int, files: dict[int, str], layers_name: str, bscan_step: int
) -> tuple[list[BScanRecord], dict[str, np.ndarray], int]:
    numbers = sorted(files)
    if numbers != list(range(1, len(numbers) + 1)):
        gaps = sorted(set(range(1, max(numbers) + 1)) - set(numbers))[:10]
        raise ValueError(
            f"Volume {volume}: B-scans {gaps} are missing from "
            f"{release.where(str(Path(files[numbers[0]]).parent))}; expected 1.bmp .. "
            f"{max(numbers)}.bmp. Is the download complete?"
        )
    expected = "'Layer' (6, n_bscans, width) surface rows"
    surfaces = np.asarray(load_mat(release, layers_name, ["Layer"], expected)["Layer"])
    first = release.read_grey(files[1])
    height, width = first.shape
    if surfaces.shape != (len(SURFACE_NAMES), len(numbers), width):
        raise ValueError(
            f"{release.where(layers_name)}: 'Layer' is {surfaces.shape}, expected "
            f"{(len(SURFACE_NAMES), len(numbers), width)} (surfaces, B-scans, A-scans) for the "
            f"{len(numbers)} B-scans of {width} A-scans of volume {volume}."
        )
    subset = _subset_of(volume)
    field_um = SUBSETS[str(subset)][1] * 1000.0
    spacing = (DEPTH_MM * 1000.0 / height, field_um / width, field_um / len(numbers))
    records, rows, raised = [], {}, 0
    for number in numbers[::bscan_step]:
        name = files[number]
        image = first if number == 1 else release.read_grey(name)
        if image.shape != (height, width) or image.dtype != np.uint8:
            raise ValueError(
                f"{release.where(name)} is {image.dtype} {image.shape}; expected uint8 "
                f"{(height, width)} like the other B-scans of volume {volume}."
            )
        case_id = f"{volume}_{number - 1:03d}"
        mask, n_raised = surfaces_to_labels(
            surfaces[:, number - 1, :],
            height,
            where=f"{release.where(layers_name)} B-scan {number}",
        )
        raised += n_raised
        rows[case_id] = surfaces[:, number - 1, :].astype(np.float32)
        records.append(
            BScanRecord(image, mask, case_id, str(volume), number - 1, spacing, str(volume))
        )
    return records, rows, raised


def prepare_octa500(
    source: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    subset: str = "both",
    bscan_step: int = 1,
) -> PrepareSummary:
    """Prepares the OCTA-500 layer task (module docstring) into ``out_dir``.

    Args:
        source: the release folder or archive.
        out_dir: the prepared folder (``<paths.data_dir>/octa500``).
        overwrite: replace a folder prepared with other settings.
        subset: ``6mm``, ``3mm`` or ``both``.
        bscan_step: keep every n-th B-scan of each volume (1 = all; 400 B-scans of 640 x 400
            per 6 mm volume take ~100 MB in memory when training).

    Returns:
        The summary; ``missing`` lists the ids of the official range that the release lacks
        (or whose surfaces are missing), or the whole subset when none of its ids is there.

    Raises:
        FileNotFoundError, ValueError: naming the file or setting at fault.
    """
    subsets = list(SUBSETS) if subset == "both" else [subset]
    if any(s not in SUBSETS for s in subsets):
        raise ValueError(f"subset must be 6mm, 3mm or both, got {subset!r} (--subset).")
    if isinstance(bscan_step, bool) or not isinstance(bscan_step, int) or bscan_step < 1:
        raise ValueError(f"bscan_step must be a positive integer, got {bscan_step!r}.")
    with Release(source, _ROOT) as release:
        bscans, layers = find_octa500(release)
        writer = PreparedWriter(
            out_dir,
            "octa500",
            {"subset": subset, "bscan_step": bscan_step},
            num_classes=len(CLASS_NAMES),
            overwrite=overwrite,
        )
        missing: list[str] = []
        raised: list[int] = []  # crossing surface entries raised, per volume read

        def read(name: str, volume: int) -> tuple[list[BScanRecord], dict, dict]:
            records, rows, n = _read_volume(
                release, volume, bscans[volume], layers[volume], bscan_step
            )
            raised.append(n)
            return records, rows, {"subset": name, "bscans": len(bscans[volume])}

        for name in subsets:
            ids = SUBSETS[name][0]
            present = [v for v in ids if v in bscans]
            if not present:
                missing.append(f"OCTA_{name} (no volume of {ids.start}..{ids.stop - 1})")
                continue
            missing += [str(v) for v in ids if v not in bscans]
            missing += [f"{v} (no GT_Layers/{v}.mat)" for v in present if v not in layers]
            writer.write_volumes(
                [str(v) for v in present if v in layers],
                lambda v, name=name: read(name, int(v)),
            )
    if sum(raised):
        log.info(
            "OCTA-500: %d crossing surface entries raised onto the surface above.", sum(raised)
        )
    return writer.finish(missing=missing)
