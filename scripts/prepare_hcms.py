#!/usr/bin/env python
"""Prepare HC-MS (He et al. 2019, Johns Hopkins: 14 healthy + 21 MS Spectralis volumes) for OCTSeg.

Examples::

    python scripts/prepare_hcms.py ~/Downloads/OCT_Manual_Delineations-2018_June_29.zip data/hcms
    python scripts/prepare_hcms.py release_folder/ data/hcms_log --intensity log

Reads ``vol/*.vol`` (through eyepy) and ``delineation/*.mat`` (``control_pts`` or ``bd_pts``),
keeps the delineated B-scans and writes, per subject, 8-bit images, labels 0..9 rasterised from
the nine boundaries, the boundaries themselves (``surfaces/``) and the header spacing, in the
prepared layout that ``dataset=hcms`` reads as ``${paths.data_dir}/hcms``. Running it again
skips the subjects already written; other settings need ``--overwrite`` or another folder.
"""

from __future__ import annotations

import argparse
import sys

from octseg.data.hcms import SUBJECTS, prepare_hcms
from octseg.data.prepared import prepare_main


def add_options(parser: argparse.ArgumentParser) -> None:
    """The HC-MS options: intensity mapping and a subset of subjects."""
    parser.add_argument(
        "--intensity",
        choices=("root", "log"),
        default="root",
        help="reflectance to 8 bit: root = x**0.25 as the JHU toolbox (default), "
        "log = HEYEX's display curve",
    )
    parser.add_argument(
        "--subjects", nargs="+", default=list(SUBJECTS), help="default: hc01..hc14 ms01..ms21"
    )


if __name__ == "__main__":
    sys.exit(prepare_main(__doc__, prepare_hcms, add_options))
