"""Cost of lending a large image-level set's B-scans as unlabelled training data.

    python scripts/benchmark_unlabelled.py                      # 4,000 B-scans, draw 462
    python scripts/benchmark_unlabelled.py --bscans 400 --draw 46 --json

Writes a generated Kermany release (``train/<CLASS>/<CLASS>-<patient>-<n>.jpeg``, 496 x 512
grey JPEGs, 8 B-scans per patient, plus one test patient per class), prepares it with
``scripts/prepare_kermany.py``'s function, then measures in fresh processes:

  draw          ``ImageLevelDataModule.unlabelled_training_scans(draw)``: the split on the
                volume headers, the seeded draw, only the drawn B-scans decoded (what
                ``+dataset@unlabelled=kermany`` with ``unlabelled_max_bscans=<draw>`` costs)
  decode_all    ``split_records()``: every training B-scan decoded (what reading the whole
                training part would cost)

Figures: seconds (wall) and the process's peak resident set above its imports (MiB, from
VmHWM), i.e. whether memory follows the draw or the dataset.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
SHAPE = (496, 512)
PER_PATIENT = 8

_DRIVER = """
import json, sys, time
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024.0
from octseg.data.image_sets import ImageLevelDataModule
from octseg.data.kermany import CLASSES
out, data_dir, split_dir, mode, draw = sys.argv[1:6]
base = hwm()
dm = ImageLevelDataModule(data_dir, "kermany", CLASSES, split="official", split_dir=split_dir)
t = time.perf_counter()
if mode == "draw":
    scans, available = dm.unlabelled_training_scans(int(draw), seed=0)
    n = len(scans)
else:
    n = available = len(dm.split_records()["train"])
seconds = time.perf_counter() - t
with open(out, "w") as f:
    json.dump({"seconds": round(seconds, 2), "bscans": n, "available": available,
               "peak_rss_above_imports_mib": round(hwm() - base, 1)}, f)
"""


def write_release(root: Path, bscans: int, seed: int = 0) -> Path:
    """A Kermany release of ``bscans`` training B-scans (8 per patient, classes in turn) and
    one test B-scan per class; each B-scan is a smooth layered image plus speckle."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, SHAPE[0])[:, None]
    layers = (0.25 + 0.5 * (np.sin(rows * 40) > 0.3)) * np.ones(SHAPE)
    for k in range(bscans):
        patient, n = divmod(k, PER_PATIENT)
        cls = CLASSES[patient % len(CLASSES)]
        grey = np.clip(layers + rng.normal(0, 0.15, SHAPE), 0, 1)
        path = root / "OCT2017" / "train" / cls / f"{cls}-{1000 + patient}-{n + 1}.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((grey * 255).astype(np.uint8)).save(path, quality=95)
    for c, cls in enumerate(CLASSES):
        path = root / "OCT2017" / "test" / cls / f"{cls}-{900 + c}-1.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((layers * 255).astype(np.uint8)).save(path, quality=95)
    return root


def measure(data_dir: Path, mode: str, draw: int, work: Path) -> dict:
    """One fresh process running ``mode`` (``draw`` or ``decode_all``) on ``data_dir``."""
    out = work / f"{mode}.json"
    split_dir = str(REPO_ROOT / "splits" / "kermany")
    subprocess.run([sys.executable, "-c", _DRIVER, str(out), str(data_dir), split_dir, mode,
                    str(draw)], check=True)  # fmt: skip
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bscans", type=int, default=4000, help="training B-scans written")
    parser.add_argument("--draw", type=int, default=462, help="B-scans drawn (max_bscans)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    from octseg.data.kermany import prepare_kermany

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare_kermany(write_release(work / "release", args.bscans), work / "kermany")
        figures = {
            "training_bscans": args.bscans,
            "bscan_shape": list(SHAPE),
            "draw": measure(work / "kermany", "draw", args.draw, work),
            "decode_all": measure(work / "kermany", "decode_all", args.draw, work),
        }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for mode in ("draw", "decode_all"):
            f = figures[mode]
            print(f"{mode:10s} {f['bscans']:6d} of {f['available']} B-scans: "
                  f"{f['seconds']:7.2f} s, peak RSS above imports "
                  f"+{f['peak_rss_above_imports_mib']} MiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
