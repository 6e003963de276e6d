#!/usr/bin/env python
"""Prepare Duke RPEDC / A2A SD-OCT (Farsiu et al., Ophthalmology 2014) for OCTSeg.

Examples::

    python scripts/prepare_duke_rpedc.py ~/Downloads/duke_rpedc data/duke_rpedc
    python scripts/prepare_duke_rpedc.py duke_rpedc/ data/duke_rpedc_jhu --min-traced 0.667

Writes the prepared layout (src/octseg/data/prepared.py) that ``dataset=duke_rpedc`` reads from
``${paths.data_dir}/duke_rpedc``: one volume per subject (AMD_1001 .. AMD_1269, Control_1001 ..
Control_1115), its traced B-scans (8-bit), labels 0 vitreous / 1 retina / 2 RPEDC / 3 choroid
from the three surfaces (255 in untraced columns) and the surface rows. Running it again skips
the volumes already there; other settings need ``--overwrite`` or another folder.
"""

from __future__ import annotations

import argparse
import sys

from octseg.data.duke_amd import add_prepare_options, prepare_duke_rpedc
from octseg.data.prepared import prepare_main


def add_options(parser: argparse.ArgumentParser) -> None:
    """The Duke RPEDC options."""
    add_prepare_options(parser)


if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_duke_rpedc, add_options))
