"""Shared pieces of the metric families: the per-batch context, the family interface, the
family registry and the aggregation helpers (per-scan means and per-volume pooling).

A family is a :class:`MetricFamily` subclass that lives in the module of its computation and
registers itself under its name with :func:`register_family`; :class:`MetricSuite` builds its
families from :func:`family_registry`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

__all__ = [
    "SuiteSpec",
    "BatchContext",
    "MetricFamily",
    "register_family",
    "family_registry",
    "MissingAnatomyError",
    "require_anatomy",
    "safe_div",
    "per_image",
    "label_pixel_counts",
    "annotated",
    "volume_sum",
    "volume_mean",
    "nanmean0",
    "named",
]


@dataclass
class SuiteSpec:
    """Static settings every family reads (built once by :class:`MetricSuite`).

    ``axial_um``, ``lateral_um`` and ``bscan_spacing_um`` are the configured spacing; families
    read the spacing of each image from :attr:`BatchContext.spacing_um`, which defaults to it.
    """

    num_classes: int
    class_names: list[str]
    ignore_index: int | None
    axial_um: float
    lateral_um: float
    bscan_spacing_um: float | None
    reported_classes: list[int]  # classes averaged into the headline means
    empty_value: float
    anatomy: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


class BatchContext:
    """One update's inputs plus lazily computed intermediates shared between families.

    Attributes:
        spacing_um: float64 ``[B, 3]`` per-image spacing on the device of ``target``: axial and
            lateral pixel size and the distance to the next B-scan in micrometres (NaN when
            unknown). Families that convert pixels to physical units read each image's own row.
        scan_scores: optional ``[B, K]`` scores a method gives each whole image per class
            (e.g. an anomaly score; NaN where none), read by image-level families.
    """

    def __init__(
        self,
        spec: SuiteSpec,
        pred: torch.Tensor,
        target: torch.Tensor,
        volume_index: torch.Tensor,
        probs: torch.Tensor | None,
        spacing_um: torch.Tensor | None = None,
        scan_scores: torch.Tensor | None = None,
    ) -> None:
        self.spec = spec
        self.scan_scores = scan_scores
        self.pred = pred
        self.target = target
        self.volume_index = volume_index
        self.probs = probs
        if spacing_um is None:
            bscan = math.nan if spec.bscan_spacing_um is None else spec.bscan_spacing_um
            row = torch.tensor(
                [spec.axial_um, spec.lateral_um, bscan], dtype=torch.float64, device=target.device
            )
            spacing_um = row.expand(int(target.shape[0]), 3)
        self.spacing_um = spacing_um
        self.cache: dict[str, Any] = {}
        #: set once the label ranges were validated (by the overlap family or the suite)
        self.labels_checked = False

    @property
    def batch_size(self) -> int:
        return int(self.target.shape[0])

    def ranks(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rank_pred, rank_true, column_defined)`` (see ``surfaces.label_ranks``), once."""
        if "ranks" not in self.cache:
            from octseg.metrics.surfaces import label_ranks

            ordered = self.spec.anatomy["ordered_labels"]
            target = self.target
            ignore = self.spec.ignore_index
            if ignore is not None and ignore < 0:  # ranks need non-negative labels
                target = target.masked_fill(target == ignore, self.spec.num_classes)
                ignore = self.spec.num_classes
            checked = self.labels_checked  # ranges validated: skip the min/max passes
            k = self.spec.num_classes
            top_true = max(k - 1, ignore or 0) if checked else None
            rank_true, defined = label_ranks(target, ordered, max_label=top_true)
            rank_pred, _ = label_ranks(self.pred, ordered, max_label=k - 1 if checked else None)
            self.cache["ranks"] = (rank_pred, rank_true, defined)
        return self.cache["ranks"]

    def surfaces(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_pred, z_true, column_defined)`` surface rows ``[B, S, W]``, computed once."""
        if "surfaces" not in self.cache:
            from octseg.metrics.surfaces import surfaces_from_ranks

            rank_pred, rank_true, defined = self.ranks()
            regions = len(self.spec.anatomy["ordered_labels"])
            self.cache["surfaces"] = (
                surfaces_from_ranks(rank_pred, regions),
                surfaces_from_ranks(rank_true, regions),
                defined,
            )
        return self.cache["surfaces"]


class MetricFamily(ABC):
    """Interface of one family of metrics inside a :class:`MetricSuite`.

    ``row_states`` maps a state name to the trailing shape of its per-image rows (concatenated
    over batches, ``dist_reduce_fx="cat"``); ``sum_states`` maps a state name to the shape of an
    accumulator summed over batches and processes (``dist_reduce_fx="sum"``).
    """

    name: str = ""

    def __init__(self, spec: SuiteSpec) -> None:
        self.spec = spec

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {}

    def sum_states(self) -> dict[str, tuple[int, ...]]:
        return {}

    @abstractmethod
    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        """Returns the new rows ``[B, ...]`` of each row state and increments of sum states."""

    @abstractmethod
    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        """Flat ``{key: scalar tensor}`` aggregates from the accumulated states."""

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-scan values ``{name: [N, C]}`` for reports (default: none)."""
        return {}


FamilyType = TypeVar("FamilyType", bound=type[MetricFamily])

#: name -> family class; filled by :func:`register_family` as the family modules are imported.
_REGISTRY: dict[str, type[MetricFamily]] = {}


def register_family(name: str) -> Callable[[FamilyType], FamilyType]:
    """Class decorator that registers a :class:`MetricFamily` subclass under ``name``.

    Example::

        @register_family("my_family")
        class MyFamily(MetricFamily):
            ...

        MetricSuite(families=["overlap", "my_family"], ...)

    Args:
        name: the family's name in ``MetricSuite(families=...)`` and ``conf/metrics/*.yaml``.

    Returns:
        The decorator; it sets ``cls.name = name`` and returns the class unchanged otherwise.

    Raises:
        TypeError: if the decorated object is not a :class:`MetricFamily` subclass.
        ValueError: if ``name`` is empty or another class is already registered under it.
    """
    if not name:
        raise ValueError("register_family needs a non-empty family name.")

    def decorator(cls: FamilyType) -> FamilyType:
        if not (isinstance(cls, type) and issubclass(cls, MetricFamily)):
            raise TypeError(
                f"@register_family({name!r}) decorates {cls!r}; expected a MetricFamily subclass."
            )
        existing = _REGISTRY.get(name)
        # the same class defined again (a module reloaded) replaces itself; another one may not
        if existing is not None and _qualified(existing) != _qualified(cls):
            raise ValueError(
                f"Metric family {name!r} is already registered by {_qualified(existing)}; "
                f"{_qualified(cls)} needs another name."
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def family_registry() -> dict[str, type[MetricFamily]]:
    """A copy of the registry: every registered family name mapped to its class.

    The built-in families register when :mod:`octseg.metrics.suite` imports their modules; the
    package's ``__init__`` imports the suite, so any import from :mod:`octseg.metrics` does it.
    """
    return dict(_REGISTRY)


class MissingAnatomyError(ValueError):
    """A metric family needs anatomy the dataset does not define (e.g. boundary errors on a
    fluid-only dataset); a suite skips such a family unless built with ``strict=True``."""


def require_anatomy(spec: SuiteSpec, family: str, key: str) -> list[int]:
    """The anatomy list ``key``, or a :class:`MissingAnatomyError` naming the missing setting."""
    value = spec.anatomy.get(key)
    if not value:
        raise MissingAnatomyError(
            f"Metric family {family!r} needs anatomy.{key} (got {value!r}); set it in the "
            "dataset config (conf/dataset/<name>.yaml, key anatomy) or drop the family from "
            "metrics.families."
        )
    return [int(v) for v in value]


def safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den > 0``, NaN elsewhere."""
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def per_image(value: float | torch.Tensor, ndim: int) -> float | torch.Tensor:
    """A per-image factor ready to scale ``[B, ...]`` tensors of ``ndim`` dimensions: a float
    stays a float, a tensor ``[B]`` becomes ``[B, 1, ..., 1]``."""
    if isinstance(value, torch.Tensor):
        return value.reshape(-1, *([1] * (ndim - 1)))
    return float(value)


def label_pixel_counts(
    labels: torch.Tensor, groups: list[list[int]], valid: torch.Tensor | None
) -> torch.Tensor:
    """Pixels per image falling in each group of labels: float64 ``[B, len(groups)]``.

    Args:
        labels: integer label maps ``[B, H, W]``.
        groups: lists of labels counted together.
        valid: bool ``[B, H, W]`` pixels to count (annotated ones), or None for all.
    """
    cols = []
    for group in groups:
        inside = torch.isin(labels, torch.as_tensor(group, device=labels.device))
        if valid is not None:
            inside &= valid
        cols.append(inside.sum(dim=(1, 2)))
    return torch.stack(cols, dim=1).double()


def annotated(ctx: BatchContext) -> torch.Tensor | None:
    """bool ``[B, H, W]`` pixels whose reference is not ``ignore_index`` (None: all are)."""
    ign = ctx.spec.ignore_index
    return None if ign is None else ctx.target != ign


def volume_sum(rows: torch.Tensor, volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums rows ``[N, ...]`` per volume id ``[N]``; returns ``(sums [V, ...], ids [V])``."""
    ids, inverse = torch.unique(volume, return_inverse=True)
    out = torch.zeros((len(ids), *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    if rows.numel():
        out.index_add_(0, inverse, rows)
    return out, ids


def volume_mean(rows: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
    """NaN-ignoring mean of rows ``[N, C]`` per volume: ``[V, C]`` (NaN where all are NaN)."""
    finite = ~torch.isnan(rows)
    sums, _ = volume_sum(torch.where(finite, rows, torch.zeros_like(rows)), volume)
    counts, _ = volume_sum(finite.to(rows.dtype), volume)
    return sums / counts  # 0/0 -> NaN


def nanmean0(x: torch.Tensor) -> torch.Tensor:
    """NaN-ignoring mean over dim 0 (NaN for an empty or all-NaN column)."""
    if x.shape[0] == 0:
        return torch.full(x.shape[1:], float("nan"), dtype=x.dtype, device=x.device)
    return torch.nanmean(x, dim=0)


def named(
    prefix: str, values: torch.Tensor, names: Sequence[str], mean_over: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """``{prefix/<name>: v}`` per entry plus ``{prefix: nanmean over mean_over}``.

    Args:
        prefix: key prefix, e.g. ``"dice"`` or ``"volume/dice"``.
        values: ``[C]`` per-entry values.
        names: one name per entry.
        mean_over: entries averaged into the headline value (all when None).
    """
    out = {f"{prefix}/{n}": values[i] for i, n in enumerate(names)}
    idx = list(range(len(names))) if mean_over is None else list(mean_over)
    sel = values[idx] if idx else values.new_full((1,), float("nan"))
    out[prefix] = torch.nanmean(sel) if sel.numel() else values.new_tensor(float("nan"))
    return out
