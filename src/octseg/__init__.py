"""OCTSeg: reproducible retinal OCT layer and fluid segmentation."""

import os

# Nothing reaches the network at import or run time (tests/test_no_network.py checks the README
# commands). albumentations asks PyPI for a newer version on every import unless this variable
# is set; every entry point imports octseg before albumentations (only octseg.data imports it).
# W&B is offline by configuration (conf/logger/wandb.yaml); no other pinned library phones home
# unless asked to download (pretrained weights, which no config requests).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
