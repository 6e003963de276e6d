"""OCTSeg: reproducible retinal OCT layer and fluid segmentation."""

__version__ = "0.1.0"
