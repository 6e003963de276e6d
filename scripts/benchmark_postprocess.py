"""Time ``postprocess=topology`` (:func:`octseg.postprocess.enforce_layer_order`) per B-scan.

Inputs: predicted label maps (PNG or NPY) at their own size, e.g. the ``predictions/`` folder
that ``eval.py ckpt_path=... save_predictions=true`` writes (Duke test scans: 496 x 506-524);
``--random`` adds uniformly random 496 x 512 label maps (the worst case: every column out of
order). The anatomy is the Duke dataset config's. Prints, per
input set, wall and process CPU milliseconds per B-scan (mean over ``--repeats`` passes) and the
order-violation rate over all columns before and after.

    python scripts/benchmark_postprocess.py --pred-dir RUN/predictions [--random] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from octseg.evaluation.label_maps import read_label_map
from octseg.metrics.topology import order_violation_rate
from octseg.postprocess import build_postprocess
from octseg.utils.config import config_dir

ANATOMY = yaml.safe_load((config_dir() / "dataset" / "duke.yaml").read_text())["anatomy"]


def measure(maps: list[torch.Tensor], repeats: int) -> dict[str, float]:
    """Per-B-scan times of the topology post-processing and violation rates around it."""
    fn = build_postprocess("topology", ANATOMY)
    ordered = ANATOMY["ordered_labels"]
    fn(maps[0])  # warm-up (lookup tables, allocator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fixed = [fn(m) for m in maps]
    n = repeats * len(maps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "scans": len(maps),
        "height": int(maps[0].shape[0]),
        "mean_width": sum(int(m.shape[1]) for m in maps) / len(maps),
        "wall_ms_per_scan": 1000 * wall / n,
        "cpu_ms_per_scan": 1000 * cpu / n,
        # Columns are independent: side by side, the rate is pooled over every column.
        "violation_rate_before": order_violation_rate(torch.cat(maps, dim=1), ordered),
        "violation_rate_after": order_violation_rate(torch.cat(fixed, dim=1), ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred-dir", type=Path, help="folder of predicted label maps")
    parser.add_argument("--random", action="store_true", help="also random label maps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets: dict[str, list[torch.Tensor]] = {}
    if args.pred_dir is not None:
        files = sorted(args.pred_dir.glob("*.png")) + sorted(args.pred_dir.glob("*.npy"))
        if not files:
            raise SystemExit(f"--pred-dir {args.pred_dir}: no .png or .npy label maps found.")
        sets["predictions"] = [torch.from_numpy(read_label_map(f).astype(np.int64)) for f in files]
    if args.random or not sets:
        gen = torch.Generator().manual_seed(0)
        sets["random"] = [torch.randint(0, 10, (496, 512), generator=gen) for _ in range(8)]
    results = {name: measure(maps, args.repeats) for name, maps in sets.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, r in results.items():
        print(
            f"{name}: {r['scans']} maps {r['height']} x {r['mean_width']:.0f} (mean): "
            f"{r['cpu_ms_per_scan']:.1f} ms CPU, {r['wall_ms_per_scan']:.1f} ms wall per B-scan; "
            f"violations {100 * r['violation_rate_before']:.2f} % -> "
            f"{100 * r['violation_rate_after']:.2f} % of columns"
        )


if __name__ == "__main__":
    main()
