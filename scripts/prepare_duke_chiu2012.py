#!/usr/bin/env python
"""Prepare Duke Chiu 2012 (Chiu et al., IOVS 2012; 20 AMD volumes) for OCTSeg.

Examples::

    python scripts/prepare_duke_chiu2012.py ~/Downloads/Chiu_IOVS_2011 data/duke_chiu2012
    python scripts/prepare_duke_chiu2012.py Chiu_IOVS_2011/ data/duke_chiu2012_g2 --grader 2

Writes the prepared layout (src/octseg/data/prepared.py) that ``dataset=duke_chiu2012`` reads
from ``${paths.data_dir}/duke_chiu2012``: one volume per file (Group1_Volume1 ..
Group4_Volume5), its traced B-scans (8-bit), labels 0 vitreous / 1 retina / 2 RPEDC /
3 choroid from the grader's three surfaces (255 in untraced columns) and the surface rows.
Running it again skips the volumes already there; other settings need ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys

from octseg.data.duke_amd import add_prepare_options, prepare_duke_chiu2012
from octseg.data.prepared import prepare_main


def add_options(parser: argparse.ArgumentParser) -> None:
    """The Duke Chiu 2012 options."""
    add_prepare_options(parser, grader=True)


if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_duke_chiu2012, add_options))
