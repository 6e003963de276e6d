"""OmegaConf resolvers used by OCTSeg's configs (registered by train.py, eval.py and tests)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from omegaconf import OmegaConf

__all__ = ["register_resolvers", "inverse_sqrt_weights"]


def inverse_sqrt_weights(frequencies: Sequence[float]) -> list[float]:
    """Class weights proportional to ``1/sqrt(frequency)``, normalised to mean 1.

    Raises:
        ValueError: if a frequency is not positive (say which class and how to fix it).
    """
    freqs = [float(f) for f in frequencies]
    for i, f in enumerate(freqs):
        if f <= 0:
            raise ValueError(
                f"dataset.class_frequencies[{i}] = {f}; class weights need positive frequencies."
            )
    raw = [1.0 / math.sqrt(f) for f in freqs]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]


def register_resolvers() -> None:
    """Registers ``${inv_sqrt:list}``, ``${repo_root:}`` (:func:`octseg.utils.config.repo_root`)
    and ``${pid:}`` (this process's id, which makes run folder
    names unique among runs started in the same second); safe to call more than once."""
    if not OmegaConf.has_resolver("repo_root"):
        from octseg.utils.config import repo_root

        OmegaConf.register_new_resolver("repo_root", lambda: str(repo_root()), use_cache=True)
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", lambda: os.getpid(), use_cache=True)
    if not OmegaConf.has_resolver("inv_sqrt"):
        # A resolver must return a config node (not a plain list) to be stored in a config.
        OmegaConf.register_new_resolver(
            "inv_sqrt", lambda freqs: OmegaConf.create(inverse_sqrt_weights(freqs))
        )
