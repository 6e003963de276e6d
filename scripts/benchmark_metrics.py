"""Benchmark OCTSeg's metric suites on Duke-sized B-scans (496 x 512, 10 classes).

Side by side in one run:

* each suite (``fast``, ``layers``, ``fluid``, ``full``) per B-scan, from logits;
* (a) a SEED-STYLE REFERENCE written here for comparison only: binary masks per class,
  marching-squares contours (``skimage.measure.find_contours(mask, 0.5)[0]``, first contour only)
  and Python loops over contour points, sklearn AUC on flattened pixels -- the per-contour
  implementation that shared/docs/methods.md section 4 describes (with its defects);
* (b) MONAI's ``compute_hausdorff_distance`` (HD, HD95) and
  ``compute_average_surface_distance(symmetric=True)`` with the same spacing, against OCTSeg's
  distance family, with the largest value difference.

Data: real Duke DME masks from ``../shared/datasets/duke_dme`` when present (cropped to 512
columns), else synthetic layered maps; the prediction perturbs the reference (column blocks
shifted by up to 3 rows, wrong-label blobs). Times are wall clock and process CPU time per B-scan
(CPU time is the fairer figure on a shared machine).

    python scripts/benchmark_metrics.py            # text table
    python scripts/benchmark_metrics.py --json     # JSON on stdout
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
import warnings

import numpy as np
import torch
import yaml

from octseg.metrics.distances import compute_surface_distances
from octseg.metrics.suite import MetricSuite
from octseg.utils.config import config_dir, repo_root

CLASS_NAMES = [
    "vitreous",
    "RNFL",
    "GCL+IPL",
    "INL",
    "OPL",
    "ONL+ISM",
    "ISE",
    "OS+RPE",
    "choroid",
    "fluid",
]
CONF = config_dir()
# The Duke dataset config and the suite configs are the single source of anatomy and families.
_DUKE = yaml.safe_load((CONF / "dataset" / "duke.yaml").read_text())
ANATOMY = _DUKE["anatomy"]
SPACING = tuple(_DUKE["spacing_um"])
SUITES = {
    name: yaml.safe_load((CONF / "metrics" / f"{name}.yaml").read_text())["families"]
    for name in ("fast", "layers", "fluid", "full")
}
DUKE = repo_root().parent / "shared" / "datasets" / "duke_dme" / "masks"


def load_references(n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], str]:
    """``n`` reference label maps 496 x 512: Duke masks when available, else synthetic."""
    files = sorted(DUKE.glob("*.png")) if DUKE.is_dir() else []
    if files:
        from PIL import Image

        picks = [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]
        return [np.array(Image.open(f))[:, :512].astype(np.int64) for f in picks], "duke_dme"
    maps = []
    for _ in range(n):
        rows = np.arange(496)[:, None]
        bounds = np.array([120, 150, 190, 215, 240, 300, 320, 345]) + rng.integers(-5, 6, 8)
        m = (rows[..., None] >= bounds).sum(-1) * np.ones((1, 512), dtype=np.int64)
        for _ in range(3):
            r, c = rng.integers(250, 290), rng.integers(50, 450)
            m[r : r + 15, c : c + 30] = 9
        maps.append(m)
    return maps, "synthetic"


def perturb(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A realistic imperfect prediction: column blocks shifted +-3 rows, wrong-label blobs."""
    pred = target.copy()
    for j in range(0, target.shape[1], 32):
        pred[:, j : j + 32] = np.roll(target[:, j : j + 32], int(rng.integers(-3, 4)), axis=0)
    for _ in range(6):
        r, c = rng.integers(50, target.shape[0] - 50), rng.integers(20, target.shape[1] - 20)
        pred[r - 4 : r + 4, c - 6 : c + 6] = rng.integers(0, 10)
    return pred


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(wall ms, cpu ms, last result) per call."""
    result = fn()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        result = fn()
    return (
        (time.perf_counter() - w0) / repeats * 1e3,
        (time.process_time() - c0) / repeats * 1e3,
        result,
    )


# ---- (a) seed-style reference: benchmark only, reproduces the defects on purpose ----------
def _seed_contour_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from skimage.measure import find_contours

    ca, cb = find_contours(a.astype(float), 0.5), find_contours(b.astype(float), 0.5)
    if not ca or not cb:
        return np.array([np.nan]), np.array([np.nan])  # the seed raised IndexError here
    ca, cb = ca[0], cb[0]  # first contour only (defect 4)
    d1 = np.array([np.min(np.linalg.norm(cb - p, axis=1)) for p in ca])
    d2 = np.array([np.min(np.linalg.norm(ca - p, axis=1)) for p in cb])
    return d1, d2


def seed_style_full(pred: np.ndarray, target: np.ndarray, probs: np.ndarray) -> dict:
    """Per class: region + confusion metrics, AUC, HD/HD95/ASSD (contours recomputed per
    metric as the seed does), pixel MAD/MSE, thickness difference, 'vascularity index'."""
    from sklearn.metrics import roc_auc_score

    warnings.filterwarnings("ignore", module="sklearn")  # one-class AUC warnings
    out = {}
    for c in range(1, 10):
        y, p = (target == c).astype(float), (pred == c).astype(float)
        tp = (y * p).sum()
        out[f"dice/{c}"] = 2 * tp / (y.sum() + p.sum() + 1e-7)
        out[f"iou/{c}"] = tp / (y.sum() + p.sum() - tp + 1e-7)
        out[f"precision/{c}"] = tp / (p.sum() + 1e-7)
        out[f"recall/{c}"] = tp / (y.sum() + 1e-7)
        tn = ((1 - y) * (1 - p)).sum()
        out[f"specificity/{c}"] = tn / (tn + ((1 - y) * p).sum() + 1e-7)
        out[f"accuracy/{c}"] = (tp + tn) / y.size
        try:
            out[f"auc/{c}"] = roc_auc_score(y.ravel(), probs[c].ravel())
        except ValueError:
            out[f"auc/{c}"] = 0.0
        d1, d2 = _seed_contour_distances(y, p)
        out[f"hd/{c}"] = max(d1.max(), d2.max())
        d1, d2 = _seed_contour_distances(y, p)
        out[f"hd95/{c}"] = max(np.percentile(d1, 95), np.percentile(d2, 95))
        d1, d2 = _seed_contour_distances(y, p)
        out[f"assd/{c}"] = (d1.mean() + d2.mean()) / 2
        out[f"mad/{c}"] = np.abs(y - p).mean()
        out[f"mse/{c}"] = ((y - p) ** 2).mean()
        out[f"thickness/{c}"] = np.abs(y.sum(0) - p.sum(0)).mean()
        out[f"vi/{c}"] = abs(y.sum() / y.size - p.sum() / p.size)
    return out


def seed_style_hd95(pred: np.ndarray, target: np.ndarray) -> list[float]:
    values = []
    for c in range(1, 10):
        d1, d2 = _seed_contour_distances(target == c, pred == c)
        values.append(max(np.percentile(d1, 95), np.percentile(d2, 95)))
    return values


def monai_distances(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    def onehot(x: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.from_numpy(x), 10).permute(2, 0, 1)[None]

    p, t = onehot(pred), onehot(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, t, spacing=SPACING)
        hd95 = compute_hausdorff_distance(p, t, percentile=95, spacing=SPACING)
        assd = compute_average_surface_distance(p, t, symmetric=True, spacing=SPACING)
    return torch.stack([hd[0], hd95[0], assd[0]], dim=1).double().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=4, help="B-scans to cycle through")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the B-scans")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    targets, source = load_references(args.scans, rng)
    preds = [perturb(t, rng) for t in targets]
    # margin 6 with unit noise: the argmax equals the perturbed prediction but for ~1e-4 of
    # the pixels (a few scattered errors), and the probabilities are not all 0 or 1
    logits = [
        (
            6 * torch.nn.functional.one_hot(torch.from_numpy(p), 10).permute(2, 0, 1).float()
            + torch.randn(10, *p.shape)
        ).contiguous()[None]
        for p in preds
    ]
    target_t = [torch.from_numpy(t)[None] for t in targets]
    n = len(targets)
    res: dict = {
        "source": source,
        "scans": n,
        "shape": list(targets[0].shape),
        "threads": args.threads,
        "ms_per_bscan": {},
    }

    def suite_run(families, inputs, spacing=None):
        suite = MetricSuite(
            families=families,
            num_classes=10,
            class_names=CLASS_NAMES,
            spacing_um=SPACING,
            anatomy=ANATOMY,
            bscan_spacing_um=123.0,
        )
        for x, t in zip(inputs, target_t, strict=True):
            suite.update(x, t, torch.tensor([0]), spacing_um=spacing)
        return suite.compute()

    for name, families in SUITES.items():
        wall, cpu, _ = timed(functools.partial(suite_run, families, logits), args.repeats)
        res["ms_per_bscan"][f"suite {name} (logits)"] = (wall / n, cpu / n)
    # the same with each batch bringing its own spacing (the data layer's 'spacing_um' key)
    rows = torch.tensor([[*SPACING, 123.0]], dtype=torch.float32)
    wall, cpu, _ = timed(lambda: suite_run(SUITES["full"], logits, rows), args.repeats)
    res["ms_per_bscan"]["suite full (logits, per-scan spacing)"] = (wall / n, cpu / n)
    label_inputs = [torch.from_numpy(p)[None] for p in preds]
    wall, cpu, _ = timed(lambda: suite_run(SUITES["fast"], label_inputs), args.repeats)
    res["ms_per_bscan"]["suite fast (label maps)"] = (wall / n, cpu / n)

    probs = [lg[0].softmax(0).numpy() for lg in logits]
    wall, cpu, _ = timed(
        lambda: [
            seed_style_full(p, t, pr) for p, t, pr in zip(preds, targets, probs, strict=True)
        ],
        1,
    )
    res["ms_per_bscan"]["(a) seed-style full"] = (wall / n, cpu / n)
    wall, cpu, _ = timed(
        lambda: [seed_style_hd95(p, t) for p, t in zip(preds, targets, strict=True)], 1
    )
    res["ms_per_bscan"]["(a) seed-style HD95 only"] = (wall / n, cpu / n)

    classes = list(range(1, 10))
    wall, cpu, ours = timed(
        lambda: [
            compute_surface_distances(p, t, classes, SPACING)
            for p, t in zip(preds, targets, strict=True)
        ],
        args.repeats,
    )
    res["ms_per_bscan"]["octseg distances HD+HD95+ASSD"] = (wall / n, cpu / n)
    wall, cpu, ref = timed(
        lambda: [monai_distances(p, t) for p, t in zip(preds, targets, strict=True)], 1
    )
    res["ms_per_bscan"]["(b) MONAI HD+HD95+ASSD"] = (wall / n, cpu / n)
    ours_a, ref_a = np.stack(ours), np.stack(ref)
    finite = np.isfinite(ref_a) & np.isfinite(ours_a)
    res["distance_max_abs_diff_um"] = float(np.abs(ours_a[finite] - ref_a[finite]).max())
    res["distance_nonfinite_agree"] = bool((np.isinf(ours_a) == np.isinf(ref_a[..., :1])).all())

    t = res["ms_per_bscan"]
    res["goals"] = {
        "full_vs_seed_speedup_cpu": t["(a) seed-style full"][1] / t["suite full (logits)"][1],
        "distances_vs_monai_speedup_cpu": t["(b) MONAI HD+HD95+ASSD"][1]
        / t["octseg distances HD+HD95+ASSD"][1],
        "fast_ms_cpu_logits": t["suite fast (logits)"][1],
        "fast_ms_cpu_labels": t["suite fast (label maps)"][1],
    }
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{n} B-scans {res['shape']} from {source}, torch threads={args.threads}")
    print(f"{'ms per B-scan':<36} {'wall':>9} {'cpu':>9}")
    for key, (w, c) in t.items():
        print(f"{key:<36} {w:>9.2f} {c:>9.2f}")
    print(
        f"max |octseg - MONAI| over finite distances: {res['distance_max_abs_diff_um']:.2e} um;"
        f" inf/NaN cases agree: {res['distance_nonfinite_agree']}"
    )
    for key, value in res["goals"].items():
        print(f"{key}: {value:.1f}" if not math.isnan(value) else f"{key}: nan")


if __name__ == "__main__":
    main()
