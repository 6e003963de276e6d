"""Topology guarantee: layer labels ordered top to bottom in every column, fluid inside the retina.

Works on the label maps of any method (no probabilities needed). In every column (A-scan) the
ordered regions (``anatomy.ordered_labels``: vitreous, layers..., choroid) are replaced by the
ordered labelling that agrees with the prediction on the most pixels: the ``R - 1`` non-crossing
surfaces ``0 <= z_0 <= ... <= z_{R-2} <= H`` that maximise

    sum_k #{ i in [z_{k-1}, z_k) : pixel i votes for region k }        (z_{-1} = 0, z_{R-1} = H)

are found exactly by dynamic programming over the surface stack, then re-rasterised. A pixel
votes for its own ordered region; a fluid pixel votes for every retinal region (it may lie in
any layer, but not in the vitreous or below the retina); ``ignore_index`` pixels vote for nothing.
With ``C_k(t)`` the votes for region ``k`` in rows ``< t`` and ``V_k(t)`` the best score of regions
``0..k`` with ``z_k = t``::

    V_0(t) = C_0(t),    V_k(t) = C_k(t) + max_{t' <= t} (V_{k-1}(t') - C_k(t'))

The inner maximum is a cumulative maximum along the rows, so one column costs ``O(R * H)`` and
every column of a batch is solved at once with ``R - 1`` torch ``cummax`` calls; the arg-maxima
(returned by ``cummax``) give the surfaces back from the bottom one up.

Why this and not the metrics' surfaces (``octseg.metrics.surfaces``, pixel counts per rank): those
are non-crossing by construction, but re-rasterising them amounts to sorting each column: it
changes no surface the metrics measure, and an island shifts every surface between its place and
its label's region by its size (a 10-pixel patch of choroid in the vitreous moves all eight Duke
surfaces up by 10 pixels). Taking the first row of each region
and a cumulative maximum down the stack instead keeps whichever surface an island pulled out of
place. The exact minimum-change labelling relabels the island and leaves the surfaces where the
prediction has them.

After re-rasterisation: fluid pixels whose region is retinal stay fluid (fluid inside the retina
is kept as predicted); fluid pixels that fall in the vitreous or below the retina take the region
there (vitreous or choroid); ``ignore_index`` pixels are kept as they are; a column without any
ordered label (untraced padding, all ignore or all fluid) is returned unchanged. The result has
zero order violations as measured by the ``topology`` metric family
(:func:`octseg.metrics.topology.order_violation_rate`) and is left unchanged by a second pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["enforce_layer_order"]

# Pixel codes besides the ranks 0..R-1 of the ordered regions.
_FLUID, _IGNORE, _UNKNOWN = -1, -2, -3


def _check_anatomy(
    ordered: list[int], fluid: list[int], retina: list[int], ignore_index: int
) -> None:
    if len(ordered) < 2 or len(set(ordered)) != len(ordered) or min(ordered) < 0:
        raise ValueError(
            f"ordered_labels must list at least two distinct non-negative region labels top to "
            f"bottom (anatomy.ordered_labels of the dataset config), got {ordered}."
        )
    if set(fluid) & set(ordered):
        raise ValueError(
            f"fluid_labels {fluid} and ordered_labels {ordered} overlap; a label is either an "
            "ordered region or fluid (fix anatomy.fluid_labels)."
        )
    if not set(retina) <= set(ordered):
        raise ValueError(
            f"retina_labels {retina} must be ordered regions (ordered_labels {ordered}); they are "
            "anatomy.layer_labels, the regions fluid may lie in."
        )
    if ignore_index in set(ordered) | set(fluid) or min(fluid, default=0) < 0:
        raise ValueError(
            f"ignore_index={ignore_index} must differ from the region and fluid labels "
            f"{ordered + fluid}, and fluid labels must be non-negative."
        )


def _pixel_codes(
    labels: torch.Tensor, ordered: list[int], fluid: list[int], ignore_index: int
) -> torch.Tensor:
    """int32 codes (shape of ``labels``): rank of an ordered region, ``_FLUID`` or ``_IGNORE``.

    Raises:
        ValueError: for negative labels or labels that are none of the three kinds.
    """
    lo, hi = (int(v) for v in torch.aminmax(labels))
    size = max(hi, *ordered, *fluid, ignore_index, 0) + 2  # the last slot: a negative ignore
    index = labels
    if lo < 0:
        index = torch.where(labels == ignore_index, size - 1, labels)
        if int(index.amin()) < 0:
            raise ValueError(f"labels must be non-negative (or ignore_index), got {lo}.")
    lut = torch.full((size,), _UNKNOWN, dtype=torch.int32, device=labels.device)
    lut[ordered] = torch.arange(len(ordered), dtype=torch.int32, device=labels.device)
    if fluid:
        lut[fluid] = _FLUID
    lut[ignore_index if ignore_index >= 0 else size - 1] = _IGNORE
    codes = lut.index_select(0, index.reshape(-1)).view(labels.shape)
    if int(codes.amin()) == _UNKNOWN:
        bad = sorted({int(v) for v in labels[codes == _UNKNOWN].unique()[:5]})
        raise ValueError(
            f"label maps hold labels {bad} that are neither ordered regions {ordered}, fluid "
            f"{fluid} nor ignore_index={ignore_index}; check the dataset's anatomy "
            "(ordered_labels, fluid_labels) matches the predictions."
        )
    return codes


def _ordered_surfaces(codes: torch.Tensor, is_retina: torch.Tensor) -> torch.Tensor:
    """Exact best non-crossing surfaces ``[N, R-1]`` (int64) of columns of pixel codes.

    Args:
        codes: int32 ``[N, H]`` pixel codes (see :func:`_pixel_codes`).
        is_retina: bool ``[R]``, the regions fluid votes for.
    """
    regions, (columns, height) = is_retina.numel(), codes.shape
    # One lookup gives every pixel's votes [N, H, R]: its own region, or the retinal regions for
    # fluid. float32 is exact here (counts <= H), and its cumsum/cummax run faster on CPU than
    # int32's.
    table = torch.zeros(regions - _UNKNOWN, regions, device=codes.device)
    table[-_UNKNOWN:] = torch.eye(regions, device=codes.device)
    table[_FLUID - _UNKNOWN] = is_retina.float()
    votes = table.index_select(0, (codes - _UNKNOWN).reshape(-1)).view(columns, height, regions)
    # C_k(t), t = 0..H: votes for region k above row t.
    cum = F.pad(votes.cumsum(1), (0, 0, 1, 0)).unbind(-1)
    best = cum[0]
    argmax_above = []
    for k in range(1, regions - 1):
        values, indices = (best - cum[k]).cummax(-1)
        best = cum[k] + values
        argmax_above.append(indices)
    total = best + cum[-1][:, -1:] - cum[-1]
    z = [total.argmax(-1, keepdim=True)]
    for indices in reversed(argmax_above):
        z.append(indices.gather(-1, z[-1]))
    return torch.cat(z[::-1], dim=-1)


def _rasterise(z: torch.Tensor, height: int) -> torch.Tensor:
    """Region ranks ``[N, H]`` (int64) from surface rows ``[N, S]``: ``#{k : z_k <= i}``."""
    marks = torch.zeros(z.shape[0], height + 1, dtype=torch.int32, device=z.device)
    marks.scatter_add_(1, z, torch.ones_like(z, dtype=torch.int32))
    return marks[:, :height].cumsum(1).long()


def enforce_layer_order(
    labels: torch.Tensor,
    ordered_labels: Sequence[int],
    fluid_labels: Sequence[int] = (),
    ignore_index: int = 255,
    retina_labels: Sequence[int] | None = None,
) -> torch.Tensor:
    """Orders the layer labels top to bottom in every column and keeps fluid inside the retina.

    See the module docstring for the method (the minimum-change ordered labelling per column)
    and what happens to fluid, ``ignore_index`` and columns without ordered labels.

    Args:
        labels: integer label maps ``[H, W]`` or ``[B, H, W]``.
        ordered_labels: region labels top to bottom (``anatomy.ordered_labels``).
        fluid_labels: fluid labels (``anatomy.fluid_labels``), kept where they lie inside the
            retina.
        ignore_index: label of pixels that carry no label; kept as they are.
        retina_labels: the ordered regions fluid may lie in (``anatomy.layer_labels``); default
            every region between the first and the last one.

    Returns:
        The ordered label maps, same shape and dtype as ``labels``.

    Raises:
        TypeError: if ``labels`` is not an integer tensor.
        ValueError: for a shape other than ``[H, W]``/``[B, H, W]``, an inconsistent anatomy or
            labels outside ``ordered_labels``, ``fluid_labels`` and ``ignore_index``.

    Example:
        >>> column = torch.tensor([[0], [1], [2], [1], [1], [2]])  # a region-2 island in 1
        >>> enforce_layer_order(column, ordered_labels=[0, 1, 2]).flatten().tolist()
        [0, 1, 1, 1, 1, 2]
    """
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dtype.is_floating_point
        or (labels.dtype.is_complex or labels.dtype == torch.bool)
    ):
        raise TypeError(
            f"labels must be an integer torch.Tensor (class labels, e.g. argmax of the logits), "
            f"got {type(labels).__name__} {getattr(labels, 'dtype', '')}."
        )
    if labels.dim() not in (2, 3) or labels.numel() == 0:
        raise ValueError(
            f"labels must be a non-empty label map [H, W] or a batch [B, H, W], got shape "
            f"{tuple(labels.shape)}."
        )
    ordered = [int(v) for v in ordered_labels]
    fluid = [int(v) for v in fluid_labels]
    retina = [int(v) for v in (ordered[1:-1] if retina_labels is None else retina_labels)]
    _check_anatomy(ordered, fluid, retina, int(ignore_index))

    batch = labels.long() if labels.dim() == 3 else labels.long()[None]
    b, h, w = batch.shape
    # Columns first, rows contiguous: every cumulative operation runs along the last dimension.
    cols = batch.transpose(1, 2).reshape(b * w, h)
    codes = _pixel_codes(cols, ordered, fluid, int(ignore_index))
    is_retina = torch.zeros(len(ordered), dtype=torch.bool, device=cols.device)
    is_retina[[ordered.index(v) for v in retina]] = True

    # Only columns with fluid or regions out of order can change (a clean column's labelling
    # is its own best ordered one): on Duke predictions about a third of the columns, so this
    # halves the time.
    ordered_codes = torch.where(codes >= 0, codes, -1)
    out_of_order = (ordered_codes < ordered_codes.cummax(1).values).any(1)
    todo = (out_of_order | (codes == _FLUID).any(1)) & (codes.amax(1) >= 0)
    out = cols.clone()
    if bool(todo.any()):
        sub, sub_codes = cols[todo], codes[todo]
        rank = _rasterise(_ordered_surfaces(sub_codes, is_retina), h)
        ordered_t = torch.tensor(ordered, dtype=torch.long, device=cols.device)
        # Fluid stays where its region is retinal; ignore pixels stay as they are.
        keep = ((sub_codes == _FLUID) & is_retina[rank]) | (sub_codes == _IGNORE)
        out[todo] = torch.where(keep, sub, ordered_t[rank])

    out = out.view(b, w, h).transpose(1, 2).contiguous().to(labels.dtype)
    return out if labels.dim() == 3 else out[0]
