"""Surface distances per class in micrometres: Hausdorff (HD), HD95 and ASSD.

Conventions (default = MONAI's ``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)`` with the same ``spacing``):

* Boundary of class ``c``: pixels of ``c`` with a 4-neighbour of another label, the image
  border counting as another label (MONAI erodes with a cross and zero border). With
  ``exclude_border=True`` the image border and unannotated (``ignore_index``) pixels are not
  boundaries, so a layer band cut by the scan's left/right edges has no vertical edges.
* Directed distances ``d(P->G)`` from every boundary pixel of the prediction to the nearest
  boundary pixel of the reference (Euclidean, anisotropic ``(axial, lateral)`` spacing), and back.
* ``HD = max(max d(P->G), max d(G->P))``; ``HD95 = max(P95 d(P->G), P95 d(G->P))`` (linear
  interpolation, as ``torch.quantile``); ``ASSD`` = mean of the pooled distances of both
  directions (MONAI, ``assd_mode="pooled"``) or the mean of the two directed means
  (``assd_mode="mean_of_means"``, MedPy's ``assd``).
* Both masks empty: NaN (``both_empty_value``); exactly one empty: ``inf``, counted in
  ``distance_failures`` and never dropped silently.

Why hand-written rather than calling MONAI: MONAI computes the edges and distances again for
every metric (HD, HD95 and ASSD each) and class, through torch/numpy conversions and a KD-tree.
Here the boundary pixels of every class come out of one vectorised pass over the label map, and
one pair of nearest-neighbour queries (``scipy.spatial.cKDTree``) per class gives all three
metrics, with identical values (tests compare with MONAI).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from octseg.metrics._base import (
    BatchContext,
    MetricFamily,
    SuiteSpec,
    named,
    nanmean0,
    register_family,
    volume_mean,
)

__all__ = ["label_boundaries", "compute_surface_distances", "DistanceFamily", "DISTANCE_METRICS"]

#: Order of the values :func:`compute_surface_distances` returns per class.
DISTANCE_METRICS: tuple[str, ...] = ("hd_um", "hd95_um", "assd_um")


def label_boundaries(
    labels: np.ndarray, valid: np.ndarray | None = None, exclude_border: bool = False
) -> np.ndarray:
    """Boundary pixels of every region of a label map in one vectorised pass.

    Args:
        labels: integer label map ``[H, W]``.
        valid: bool ``[H, W]`` annotated pixels (others are outside every class), or None.
        exclude_border: if True, neither the image border nor invalid pixels make a boundary.

    Returns:
        bool ``[H, W]``: pixels having a 4-neighbour with another label (the image border
        counting as another label unless ``exclude_border``).
    """
    edges = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        differs = labels[tuple(a)] != labels[tuple(b)]
        if exclude_border and valid is not None:
            differs &= valid[tuple(a)] & valid[tuple(b)]
        edges[tuple(a)] |= differs
        edges[tuple(b)] |= differs
    if not exclude_border:
        edges[0, :] = edges[-1, :] = True
        edges[:, 0] = edges[:, -1] = True
    return edges


def _present(labels: np.ndarray) -> set[int]:
    """Labels present in a map whose values are >= -1."""
    counts = np.bincount(labels.ravel() + 1)
    return {int(v) - 1 for v in np.flatnonzero(counts)}


def _group_points(labels: np.ndarray, edges: np.ndarray) -> dict[int, np.ndarray]:
    """``{label: [n, 2] (row, col) boundary points}`` from one nonzero + sort."""
    rows, cols = np.nonzero(edges)
    labs = labels[rows, cols]
    order = np.argsort(labs, kind="stable")
    rows, cols, labs = rows[order], cols[order], labs[order]
    uniq, starts = np.unique(labs, return_index=True)
    ends = np.append(starts[1:], len(labs))
    return {
        int(u): np.stack([rows[s:e], cols[s:e]], axis=1)
        for u, s, e in zip(uniq, starts, ends, strict=False)
    }


def _directed(
    from_pts: np.ndarray, to_pts: np.ndarray, sampling: np.ndarray, shared: np.ndarray
) -> np.ndarray:
    """Exact Euclidean distances (um) from each of ``from_pts`` to the nearest of ``to_pts``.

    A KD-tree over the (sparse) boundary points: measured 2-10x faster than an EDT of the
    cropped bounding box for OCT layers, whose boxes span the whole width; values are identical.
    Points in ``shared`` (bool per ``from_pts``) lie on both boundaries: distance 0, no query.
    """
    dist = np.zeros(len(from_pts), dtype=np.float64)
    todo = ~shared
    if todo.any():
        tree = cKDTree(to_pts * sampling, leafsize=16, balanced_tree=False, compact_nodes=False)
        dist[todo] = tree.query(from_pts[todo] * sampling, k=1)[0]
    return dist


def compute_surface_distances(
    pred: np.ndarray,
    target: np.ndarray,
    classes: list[int],
    spacing_um: tuple[float, float],
    ignore_index: int | None = None,
    exclude_border: bool = False,
    assd_mode: str = "pooled",
    both_empty_value: float = float("nan"),
) -> np.ndarray:
    """HD, HD95 and ASSD per class for one image.

    Args:
        pred: predicted labels ``[H, W]``.
        target: reference labels ``[H, W]``; ``ignore_index`` pixels belong to no class (the
            prediction there is ignored too).
        classes: class labels to evaluate.
        spacing_um: ``(axial, lateral)`` pixel spacing in micrometres.
        ignore_index: label of unannotated pixels, or None.
        exclude_border: do not count the image border (and unannotated pixels) as boundary.
        assd_mode: ``"pooled"`` (MONAI) or ``"mean_of_means"`` (MedPy).
        both_empty_value: value when the class is absent from both masks.

    Returns:
        float64 ``[len(classes), 3]`` (HD, HD95, ASSD) in micrometres; ``inf`` when exactly one
        mask is empty.

    Raises:
        ValueError: on shape mismatch or an unknown ``assd_mode``.
    """
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and target must be [H, W] of equal size, got {pred.shape} and {target.shape}."
        )
    if assd_mode not in ("pooled", "mean_of_means"):
        raise ValueError(f"assd_mode must be 'pooled' or 'mean_of_means', got {assd_mode!r}.")
    target = target.astype(np.int64, copy=False)
    pred = pred.astype(np.int64, copy=True)
    valid = None
    if ignore_index is not None:
        valid = target != ignore_index
        pred[~valid] = -1  # outside every class
        target = np.where(valid, target, -1)
    edges_pred = label_boundaries(pred, valid, exclude_border)
    edges_true = label_boundaries(target, valid, exclude_border)
    pts_pred = _group_points(pred, edges_pred)
    pts_true = _group_points(target, edges_true)
    # A pixel on the boundary of the same class in both maps is at distance 0 in both
    # directions; on good predictions that is a large share of the points.
    same_edge = edges_pred & edges_true & (pred == target)
    # class presence by bincount (np.unique sorts the whole map: ~10x slower)
    present_pred = _present(pred)
    present_true = _present(target)
    sampling = np.asarray(spacing_um, dtype=np.float64)
    out = np.empty((len(classes), 3), dtype=np.float64)
    for i, c in enumerate(classes):
        in_pred, in_true = c in present_pred, c in present_true
        if not in_pred and not in_true:
            out[i] = both_empty_value
            continue
        p, g = pts_pred.get(c), pts_true.get(c)
        if not in_pred or not in_true or p is None or g is None:
            # exactly one mask empty (or, with exclude_border, a mask without any boundary)
            out[i] = np.inf
            continue
        d_pg = _directed(p, g, sampling, same_edge[p[:, 0], p[:, 1]])
        d_gp = _directed(g, p, sampling, same_edge[g[:, 0], g[:, 1]])
        hd = max(d_pg.max(), d_gp.max())
        hd95 = max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))
        if assd_mode == "pooled":
            assd = (d_pg.sum() + d_gp.sum()) / (len(d_pg) + len(d_gp))
        else:
            assd = (d_pg.mean() + d_gp.mean()) / 2
        out[i] = (hd, hd95, assd)
    return out


@register_family("distance")
class DistanceFamily(MetricFamily):
    """HD, HD95 and ASSD (um) per class and scan, computed on CPU with scipy, each scan with its
    own ``(axial, lateral)`` spacing.

    Options (``MetricSuite(options={"distance": {...}})``): ``exclude_border`` (False),
    ``assd_mode`` ("pooled"), ``both_empty_value`` (NaN), ``failure_value_um`` (None: a failed
    scan/class — exactly one mask empty — is left out of the mean and counted in
    ``distance_failures``; a number: the failure enters the mean with that value).
    """

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        opts = dict(spec.options.get(self.name, {}))
        self.exclude_border = bool(opts.pop("exclude_border", False))
        self.assd_mode = str(opts.pop("assd_mode", "pooled"))
        self.both_empty_value = float(opts.pop("both_empty_value", float("nan")))
        failure = opts.pop("failure_value_um", None)
        self.failure_value = None if failure is None else float(failure)
        if opts:
            raise ValueError(
                f"Unknown options {sorted(opts)} for the distance family; expected "
                "exclude_border, assd_mode, both_empty_value, failure_value_um."
            )
        self.classes = list(spec.reported_classes)
        self.names = [spec.class_names[c] for c in self.classes]

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"values": (self.spec.num_classes, 3)}  # NaN for classes not evaluated

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        pred = ctx.pred.detach().cpu().numpy()
        target = ctx.target.detach().cpu().numpy()
        spacing = ctx.spacing_um[:, :2].cpu().tolist()
        rows = [
            compute_surface_distances(
                pred[b],
                target[b],
                self.classes,
                (spacing[b][0], spacing[b][1]),
                self.spec.ignore_index,
                self.exclude_border,
                self.assd_mode,
                self.both_empty_value,
            )
            for b in range(pred.shape[0])
        ]
        values = np.full((pred.shape[0], self.spec.num_classes, 3), np.nan)
        if rows:
            values[:, self.classes] = np.stack(rows)
        return {"values": torch.from_numpy(values)}

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        values = states["values"][:, self.classes]
        failed = torch.isinf(values)
        if self.failure_value is None:
            usable = torch.where(failed, torch.full_like(values, float("nan")), values)
        else:
            usable = torch.where(failed, torch.full_like(values, self.failure_value), values)
        out: dict[str, Any] = {}
        for m, metric in enumerate(DISTANCE_METRICS):
            out.update(named(metric, nanmean0(usable[..., m]), self.names))
            out.update(
                named(
                    "volume/" + metric, nanmean0(volume_mean(usable[..., m], volume)), self.names
                )
            )
        fails = failed[..., 0].sum(0).double()
        out.update({f"distance_failures/{n}": fails[i] for i, n in enumerate(self.names)})
        out["distance_failures"] = fails.sum()
        return out

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        values = states["values"]
        return {metric: values[..., m] for m, metric in enumerate(DISTANCE_METRICS)}
