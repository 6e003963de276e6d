"""Surface rows to region label maps, for the layer datasets prepared from traced surfaces
(OCTA-500, Duke RPEDC, Duke Chiu 2012).

Convention (the same as the Duke DME preparation): in each column, with ``b_k`` the row of
surface ``k`` truncated to an integer, region ``k`` covers rows ``[b_{k-1}, b_k)``
(``b_{-1} = 0``, ``b_S = H``), so label 0 lies above the first surface and label ``S`` below the
last. A surface above the one before it (crossing) is raised onto it: the layer between has zero
thickness. A column where any surface is untraced (NaN) gets ``ignore_index``: only fully traced
columns count.
"""

from __future__ import annotations

import numpy as np

__all__ = ["surfaces_to_labels"]


def surfaces_to_labels(
    surfaces: np.ndarray, height: int, ignore_index: int = 255, where: str = "surfaces"
) -> tuple[np.ndarray, int]:
    """Rasterises the surfaces of one B-scan into region labels (module docstring).

    Args:
        surfaces: ``[S, W]`` surface rows, top to bottom, NaN where untraced.
        height: number of image rows ``H``.
        ignore_index: label of columns that are not fully traced.
        where: names the B-scan in error messages.

    Returns:
        The uint8 (uint16 when ``ignore_index`` > 255) labels ``[H, W]`` in ``0..S`` or
        ``ignore_index``, and the number of surface entries raised onto the surface above.

    Raises:
        ValueError: if ``surfaces`` is not 2-D or a traced row lies outside ``[0, H]``.
    """
    surfaces = np.asarray(surfaces, dtype=np.float64)
    if surfaces.ndim != 2:
        raise ValueError(f"{where}: surfaces must be [S, W], got shape {surfaces.shape}.")
    finite = np.isfinite(surfaces)
    traced = finite.all(axis=0)
    values = surfaces[:, traced]
    if values.size and (values.min() < 0 or values.max() > height):
        raise ValueError(
            f"{where}: surface rows {values.min():.1f}..{values.max():.1f} lie outside the "
            f"image rows 0..{height}."
        )
    rows = np.floor(np.where(finite, surfaces, 0.0)).astype(np.int64)
    ordered = np.maximum.accumulate(rows, axis=0)
    raised = int((ordered != rows)[:, traced].sum())
    # label = number of surfaces at or above the row
    row_index = np.arange(height)[None, :, None]
    dtype = np.uint8 if ignore_index <= 255 else np.uint16
    labels = (row_index >= ordered[:, None, :]).sum(axis=0).astype(dtype)
    labels[:, ~traced] = ignore_index
    return labels, raised
