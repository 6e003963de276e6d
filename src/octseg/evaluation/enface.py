"""En-face thickness maps of a volume, the fovea, and ETDRS sector means.

A thickness map is ``[N, W]``: one row per B-scan, one column per A-scan, micrometres (NaN where
a column is undefined). With the lateral spacing (between A-scans) and the B-scan spacing, map
pixel ``(n, j)`` lies at ``x = (j - j0) * lateral``, ``y = (n - n0) * bscan`` millimetres from
the fovea ``(n0, j0)``.

ETDRS grid (Early Treatment Diabetic Retinopathy Study): circles of 1, 3 and 6 mm diameter
around the fovea; the central disc, and the inner (1-3 mm) and outer (3-6 mm) rings each split
into superior, nasal, inferior and temporal quadrants by the diagonals: 9 sectors. The mean of a
sector is over the map pixels whose centre lies in it (NaN when none does: a volume narrower
than 6 mm leaves outer sectors empty).

Orientation: nasal is towards the optic disc: ``+x`` (increasing A-scan index) in a right eye
(OD) and ``-x`` in a left eye (OS), as on a fundus image with the A-scans running left to
right. Superior is the direction of decreasing fundus-image ``y``; ``superior_at_last_bscan``
says whether the last B-scan is the superior one (true for Heidelberg volumes, whose B-scans are
acquired bottom to top; read from the B-scan positions when the file has them).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch

from octseg.metrics.surfaces import extract_surfaces
from octseg.metrics.thickness import layer_thickness

__all__ = [
    "ETDRS_SECTORS",
    "etdrs_sector_means",
    "find_fovea",
    "render_thickness_map",
    "scan_profiles",
    "superior_at_last_bscan",
]

#: Sector names: the central disc, then inner and outer ring quadrants.
ETDRS_SECTORS = (
    "central",
    "inner_superior",
    "inner_nasal",
    "inner_inferior",
    "inner_temporal",
    "outer_superior",
    "outer_nasal",
    "outer_inferior",
    "outer_temporal",
)
_RADII_MM = (0.5, 1.5, 3.0)


def scan_profiles(
    labels: np.ndarray | torch.Tensor,
    ordered_labels: Sequence[int],
    layer_labels: Sequence[int],
    axial_um: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One B-scan's surfaces and its row of the en-face maps, from one surface extraction.

    Args:
        labels: integer label map ``[H, W]``.
        ordered_labels: region labels top to bottom (``anatomy.ordered_labels``).
        layer_labels: the layers (``anatomy.layer_labels``).
        axial_um: axial pixel spacing.

    Returns:
        ``(depth, thickness)``: float64 ``[R-1, W]`` depth of each surface below the image top
        in micrometres, and float64 ``[L + 1, W]`` each layer's thickness (``layer_labels``
        order) then the total retinal thickness (the layers' sum); NaN where a column is
        undefined (no ordered label in it).

    Raises:
        ValueError: if a layer label is not an ordered region.
    """
    ordered = [int(v) for v in ordered_labels]
    missing = [lab for lab in layer_labels if lab not in ordered]
    if missing:
        raise ValueError(f"layer labels {missing} are not in ordered_labels {ordered}.")
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)[None]
    z, defined = extract_surfaces(labels, ordered)
    undefined = ~defined[0].numpy()
    depth = z[0].double().numpy() * axial_um
    positions = [ordered.index(lab) for lab in layer_labels]
    thick = layer_thickness(z, labels.shape[-2], positions, axial_um)[0].numpy()
    thick = np.concatenate([thick, thick.sum(axis=0, keepdims=True)])
    depth[:, undefined] = np.nan
    thick[:, undefined] = np.nan
    return depth, thick


def _offsets_mm(
    shape: tuple[int, int], fovea: tuple[float, float], lateral_um: float, bscan_um: float
) -> tuple[np.ndarray, np.ndarray]:
    n, w = shape
    y = (np.arange(n, dtype=np.float64) - fovea[0]) * bscan_um / 1000.0
    x = (np.arange(w, dtype=np.float64) - fovea[1]) * lateral_um / 1000.0
    return np.meshgrid(y, x, indexing="ij")


def etdrs_sector_means(
    thickness: np.ndarray,
    fovea: tuple[float, float],
    lateral_um: float,
    bscan_um: float,
    laterality: str = "OD",
    superior_last: bool = True,
) -> dict[str, tuple[float, int]]:
    """Mean thickness in each ETDRS sector.

    Args:
        thickness: en-face map ``[N, W]`` in micrometres (NaN ignored).
        fovea: ``(bscan_index, column)`` of the fovea (fractional allowed).
        lateral_um: micrometres between A-scans.
        bscan_um: micrometres between B-scans.
        laterality: ``OD`` or ``OS`` (decides which side is nasal).
        superior_last: whether the last B-scan is the superior one.

    Returns:
        sector name -> ``(mean in micrometres or NaN, number of map pixels averaged)``.

    Raises:
        ValueError: for a map that is not 2-D, non-positive spacing or an unknown laterality.
    """
    if thickness.ndim != 2:
        raise ValueError(f"thickness map must be [N, W], got shape {thickness.shape}.")
    if not (lateral_um > 0 and bscan_um > 0):
        raise ValueError(
            f"ETDRS sectors need positive lateral and B-scan spacing, got {lateral_um}, "
            f"{bscan_um} um."
        )
    if laterality not in ("OD", "OS"):
        raise ValueError(f"laterality={laterality!r}; expected OD or OS.")
    y, x = _offsets_mm(thickness.shape, fovea, lateral_um, bscan_um)
    up = y if superior_last else -y  # positive towards superior
    nasal = x if laterality == "OD" else -x
    radius = np.hypot(up, nasal)
    # Quadrants by the diagonals: the larger of |up| and |nasal| decides.
    vertical = np.abs(up) >= np.abs(nasal)
    quadrant = {
        "superior": vertical & (up > 0),
        "inferior": vertical & (up <= 0),
        "nasal": ~vertical & (nasal > 0),
        "temporal": ~vertical & (nasal <= 0),
    }
    rings = {
        "central": radius <= _RADII_MM[0],
        "inner": (radius > _RADII_MM[0]) & (radius <= _RADII_MM[1]),
        "outer": (radius > _RADII_MM[1]) & (radius <= _RADII_MM[2]),
    }
    valid = np.isfinite(thickness)
    out: dict[str, tuple[float, int]] = {}
    for name in ETDRS_SECTORS:
        ring, _, side = name.partition("_")
        mask = rings[ring] & valid & (quadrant[side] if side else True)
        count = int(mask.sum())
        out[name] = (float(thickness[mask].mean()) if count else math.nan, count)
    return out


def find_fovea(
    total_thickness: np.ndarray,
    lateral_um: float,
    bscan_um: float,
    search_radius_mm: float = 1.5,
    smoothing_um: float = 150.0,
) -> tuple[float, float]:
    """The fovea as the thinnest point of the smoothed total retinal thickness near the
    volume's centre (macular volumes are centred on the fovea by the operator).

    Smoothing (a Gaussian of ``smoothing_um`` standard deviation, in micrometres on both
    axes, NaN-aware) keeps single noisy columns from winning.

    Args:
        total_thickness: ``[N, W]`` total retinal thickness in micrometres.
        lateral_um: micrometres between A-scans.
        bscan_um: micrometres between B-scans.
        search_radius_mm: how far from the volume's centre the fovea is looked for.
        smoothing_um: the smoothing scale.

    Returns:
        ``(bscan_index, column)`` of the fovea.

    Raises:
        ValueError: when the map has no defined value within the search radius.
    """
    from scipy.ndimage import gaussian_filter

    valid = np.isfinite(total_thickness)
    sigma = (smoothing_um / bscan_um, smoothing_um / lateral_um)
    filled = np.where(valid, total_thickness, 0.0)
    weight = gaussian_filter(valid.astype(np.float64), sigma, mode="nearest")
    smooth = gaussian_filter(filled, sigma, mode="nearest") / np.maximum(weight, 1e-9)
    n, w = total_thickness.shape
    y, x = _offsets_mm((n, w), ((n - 1) / 2, (w - 1) / 2), lateral_um, bscan_um)
    inside = (np.hypot(y, x) <= search_radius_mm) & (weight > 0.5)
    if not inside.any():
        raise ValueError(
            "The fovea cannot be found: the total retinal thickness is undefined near the "
            "volume's centre; give it as fovea=[BSCAN_INDEX,COLUMN]."
        )
    flat = np.where(inside, smooth, np.inf).argmin()
    row, col = np.unravel_index(flat, (n, w))
    return float(row), float(col)


def superior_at_last_bscan(bscan_positions_mm: Sequence[Sequence[Sequence[float]]]) -> bool | None:
    """Whether the last B-scan is the superior one, from vendor B-scan positions
    (``[[start_xy], [end_xy]]`` per B-scan in fundus-image mm, ``y`` growing downwards); None
    when unknown."""
    try:
        first, last = float(bscan_positions_mm[0][0][1]), float(bscan_positions_mm[-1][0][1])
    except (IndexError, TypeError, ValueError):
        return None
    if not (math.isfinite(first) and math.isfinite(last)) or first == last:
        return None
    return last < first


def render_thickness_map(
    thickness: np.ndarray,
    title: str,
    lateral_um: float | None,
    bscan_um: float | None,
    fovea: tuple[float, float] | None = None,
) -> bytes:
    """A PNG of an en-face map with a colour bar in micrometres, at true aspect when both
    spacings are known (axes in mm), else in pixels; the ETDRS circles around ``fovea``.

    Returns:
        The PNG file's bytes (written atomically by the caller).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Circle

    n, w = thickness.shape
    physical = bool(lateral_um and bscan_um and math.isfinite(bscan_um))
    sx = lateral_um / 1000.0 if physical else 1.0
    sy = bscan_um / 1000.0 if physical else 1.0
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    try:
        finite = thickness[np.isfinite(thickness)]
        vmin, vmax = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        # Row 0 at the bottom: B-scan index grows upwards, as the B-scans lie on the fundus.
        image = ax.imshow(
            thickness,
            origin="lower",
            extent=(-0.5 * sx, (w - 0.5) * sx, -0.5 * sy, (n - 0.5) * sy),
            aspect="equal" if physical else "auto",
            cmap="viridis",
            vmin=float(vmin),
            vmax=float(max(vmax, vmin + 1.0)),  # a constant map still gets a scale
            interpolation="nearest",
        )
        bar = fig.colorbar(image, ax=ax, label="thickness (um)")
        bar.formatter.set_useOffset(False)  # plain micrometres, not "+1.9e3" offsets
        unit = "mm" if physical else "pixels"
        ax.set_xlabel(f"A-scan ({unit})")
        ax.set_ylabel(f"B-scan ({unit})")
        ax.set_title(title)
        if fovea is not None and physical:
            centre = (fovea[1] * sx, fovea[0] * sy)
            for radius in _RADII_MM:
                ax.add_patch(Circle(centre, radius, fill=False, color="white", lw=0.8))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()
