"""Post-processing of predicted label maps, for any method: ``postprocess=topology`` orders the
layers top to bottom in every column and keeps fluid inside the retina. A layer beside
``octseg.metrics``: pure tensor functions, no files."""

from __future__ import annotations

from octseg.postprocess.build import POSTPROCESS_NAMES, build_postprocess
from octseg.postprocess.topology import enforce_layer_order

__all__ = ["POSTPROCESS_NAMES", "build_postprocess", "enforce_layer_order"]
