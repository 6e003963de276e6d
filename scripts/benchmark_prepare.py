"""Speed and memory of dataset preparation, and of training on what it wrote.

    python scripts/benchmark_prepare.py                          # every dataset, full size
    python scripts/benchmark_prepare.py --datasets hcms,retouch --json
    python scripts/benchmark_prepare.py --scale 0.1 --steps 2    # a quick check of the script

For each dataset, the release writers of its tests (``tests/data/*_fixtures.py``) write a
generated release of two full-size volumes in the official format into a temporary folder:

  hcms      Spectralis .vol of 49 x 496 x 1024 (float32) + delineation .mat (bd_pts)
  retouch   Cirrus oct/reference .mhd + .raw of 128 x 1024 x 512 (uint8)
  aroi      one patient's 47 annotated B-scans of 1024 x 512 (palette PNG) + label PNGs

``scripts/prepare_<name>.py`` then runs in a fresh process on the first volume alone, and
again on both. Figures per dataset:

  s_per_volume, cpu_s_per_volume   preparation time of the two-volume run / 2 (wall, CPU),
                                   imports excluded (the one_volume / two_volumes entries
                                   hold each run's import and preparation figures)
  peak_rss_mib                     the process's peak resident set (VmHWM) after its imports,
                                   with one volume and with two: equal peaks for one and two
                                   volumes mean memory is bounded by one volume, not the dataset
  loading_vs_preloaded_ratio       scripts/benchmark.py's figure, training on the prepared
                                   two volumes through the dataset's PreparedDataModule with
                                   the default augmentation (light_crop, 496 x 128 crops)

``--scale`` shrinks every dimension of the volumes and the crop (e.g. 0.1 for the test).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch

# The release writers live with the tests they serve (tests/data/): one writer per format.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmark import loading_vs_preloaded  # noqa: E402  (scripts/benchmark.py)
from hydra.utils import instantiate  # noqa: E402

from octseg.utils.config import compose  # noqa: E402
from tests.data.prepared_run import write_split  # noqa: E402
from tests.data.release_fixtures import write_mhd, write_png  # noqa: E402
from tests.data.vol_fixtures import write_vol  # noqa: E402

__all__ = ["DATASETS", "benchmark_dataset", "layered_volume", "main", "run_prepare_measured"]

MIB = 1024.0
CROP = (496, 128)  # conf/augmentation/light_crop.yaml, the default of train.py


@dataclass(frozen=True)
class _Dataset:
    """How to write a two-volume release of one dataset and which volumes it holds."""

    shape: tuple[int, int, int]  # full size: B-scans, rows, columns
    release: str  # the release format, for the report
    volume_ids: tuple[str, str]  # the prepared volume ids (= subjects)
    write: Callable[[Path, tuple[int, int, int]], Path]  # (folder, shape) -> release root


def layered_volume(
    shape: tuple[int, int, int], n_surfaces: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A retina-like generated volume: smooth ordered surfaces, region labels and speckled
    grey values (realistic PNG compression, unlike uniform noise).

    Args:
        shape: ``(B-scans, rows, columns)``.
        n_surfaces: surfaces per B-scan; regions are labelled ``0..n_surfaces`` top to bottom.
        seed: random seed.

    Returns:
        ``(surfaces float64 [N, S, W] 0-based rows, labels uint8 [N, H, W],
        grey float32 [N, H, W] in [0, 1])``.
    """
    n, h, w = shape
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 2.0 * np.pi, w)
    top = h * (0.25 + 0.03 * np.sin(x[None, :] + rng.uniform(0, 2 * np.pi, (n, 1))))
    gaps = rng.uniform(0.02, 0.06, n_surfaces) * h
    gaps[0] = 0.0
    surfaces = top[:, None, :] + np.cumsum(gaps)[None, :, None]
    levels = rng.uniform(0.15, 0.85, n_surfaces + 1).astype(np.float32)
    levels[0] = levels[-1] = 0.1  # vitreous and choroid dark
    rows = np.arange(h)[:, None]
    labels = np.empty(shape, np.uint8)
    grey = np.empty(shape, np.float32)
    for k in range(n):  # one B-scan at a time keeps the temporaries small
        labels[k] = (rows[None] > surfaces[k][:, None, :]).sum(axis=0)
        speckle = rng.exponential(1.0, (h, w)).astype(np.float32)
        grey[k] = np.clip(levels[labels[k]] * (0.5 + 0.5 * speckle), 0.0, 1.0)
    return surfaces, labels, grey


def _write_hcms(root: Path, shape: tuple[int, int, int]) -> Path:
    for i, subject in enumerate(("hc01", "hc02")):
        surfaces, _, grey = layered_volume(shape, 9, seed=i)
        stem = f"{subject}_spectralis_macula_v1_s1_R"
        write_vol(root / "vol" / f"{stem}.vol", grey**4)  # reflectance; prepared as x ** 0.25
        bd_pts = np.transpose(surfaces, (2, 0, 1)) + 1.0  # [A-scans, B-scans, 9], 1-based
        (root / "delineation").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "delineation" / f"{stem}.mat", {"bd_pts": bd_pts})
    return root


def _write_retouch(root: Path, shape: tuple[int, int, int]) -> Path:
    spacing_xyz_mm = (0.011742, 0.001955, 0.047244)  # Cirrus
    fluid = np.array([0, 0, 1, 2, 3, 0], np.uint8)  # regions 2, 3, 4 hold IRF, SRF, PED
    for i, volume in enumerate(("TRAIN001", "TRAIN002")):
        _, labels, grey = layered_volume(shape, 5, seed=10 + i)
        reference = fluid[labels]
        w = shape[2]
        reference[:, :, : w // 3] = 0  # fluid in the central third of the columns only
        reference[:, :, 2 * w // 3 :] = 0
        folder = root / "TrainingCirrus" / "RETOUCH-TrainingSet-Cirrus" / volume
        write_mhd(folder / "oct.mhd", (grey * 255).astype(np.uint8), spacing_xyz_mm)
        write_mhd(folder / "reference.mhd", reference, spacing_xyz_mm)
    return root


def _write_aroi(root: Path, shape: tuple[int, int, int]) -> Path:
    base = root / "AROI - online" / "24 patient"
    for patient in (1, 2):
        _, labels, grey = layered_volume(shape, 4, seed=20 + patient)  # labels 0..4: layers
        folder = base / f"patient{patient}"
        for k in range(shape[0]):
            name = f"patient{patient}_raw{k + 1:04d}.png"
            write_png(folder / "raw" / "labeled" / name, (grey[k] * 255).astype(np.uint8), "P")
            write_png(folder / "mask" / "number" / name, labels[k])
    return root


DATASETS: dict[str, _Dataset] = {
    "hcms": _Dataset((49, 496, 1024), ".vol + delineation .mat", ("hc01", "hc02"), _write_hcms),
    "retouch": _Dataset(
        (128, 1024, 512), "Cirrus .mhd + .raw", ("TRAIN001", "TRAIN002"), _write_retouch
    ),
    "aroi": _Dataset(
        (47, 1024, 512), "palette + label PNG", ("patient1", "patient2"), _write_aroi
    ),
}


# Runs a scripts/prepare_<name>.py in a fresh interpreter as its `__main__` block does (every
# one is `sys.exit(prepare_main(__doc__, prepare_<name>, add_options))`), timing the imports and
# the preparation apart. Peak memory is VmHWM, the high-water mark of this process's own pages:
# ru_maxrss also counts the pages of the parent it was forked from (here, a process holding
# torch), which would hide a small preparation.
_DRIVER = """
import importlib.util, json, resource, sys, time
def usage():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        hwm = ru.ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    return time.perf_counter(), ru.ru_utime + ru.ru_stime, hwm / 1024.0
out, script, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
t0, c0, _ = usage()
spec = importlib.util.spec_from_file_location("prepare_script", script)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from octseg.data.prepared import prepare_main
name = script.rsplit("prepare_", 1)[1][: -len(".py")]
t1, c1, m1 = usage()
status = prepare_main(module.__doc__, getattr(module, "prepare_" + name),
                      getattr(module, "add_options", None), argv)
t2, c2, m2 = usage()
with open(out, "w") as f:
    json.dump({"status": status, "import_s": t1 - t0, "import_cpu_s": c1 - c0,
               "import_peak_rss_mib": m1, "prepare_s": t2 - t1, "prepare_cpu_s": c2 - c1,
               "peak_rss_mib": m2}, f)
"""


def run_prepare_measured(name: str, argv: list[str], work: Path, tag: str) -> dict[str, float]:
    """Runs ``scripts/prepare_<name>.py argv`` in a fresh process and measures it.

    Args:
        name: the dataset (script ``prepare_<name>.py``).
        argv: the script's arguments.
        work: folder for the run's log (``<tag>.log``) and figures (``<tag>.json``).
        tag: name of this run's files.

    Returns:
        ``import_s``, ``import_cpu_s``, ``import_peak_rss_mib`` (after the imports),
        ``prepare_s``, ``prepare_cpu_s`` and ``peak_rss_mib`` (whole run, MiB).

    Raises:
        RuntimeError: with the end of its output, when the script fails.
    """
    figures = work / f"{tag}.json"
    script = str(REPO_ROOT / "scripts" / f"prepare_{name}.py")
    log = work / f"{tag}.log"
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-c", _DRIVER, str(figures), script, *argv],
                              stdout=out, stderr=subprocess.STDOUT, check=False)  # fmt: skip
    result = json.loads(figures.read_text()) if figures.is_file() else {}
    if done.returncode != 0 or result.get("status") != 0:
        raise RuntimeError(
            f"prepare_{name}.py {' '.join(argv)} failed (status {done.returncode}):\n"
            f"{log.read_text()[-2000:]}"
        )
    result.pop("status")
    return result


def _without(release: Path, folder: Path, volume_id: str) -> Path:
    """A copy of ``release`` made of symbolic links, without the files of ``volume_id``."""
    for path in release.rglob("*"):
        relative = path.relative_to(release)
        if path.is_file() and volume_id not in relative.as_posix():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).symlink_to(path)
    return folder


def _scaled(shape: tuple[int, ...], scale: float, least: int) -> tuple[int, ...]:
    return tuple(max(least, round(s * scale)) for s in shape)


def benchmark_dataset(name: str, work: Path, scale: float = 1.0, steps: int = 10) -> dict:
    """Writes a two-volume release of ``name``, times its preparation script and measures the
    loading ratio on the result (``steps`` training steps per run; 0 skips it).

    Args:
        name: a key of :data:`DATASETS`.
        work: an empty folder for the release, the prepared folders and logs.
        scale: factor on every dimension of the volumes and the training crop.
        steps: timed training steps per run of the loading ratio.

    Returns:
        The dataset's row (see the module docstring).
    """
    spec = DATASETS[name]
    n, h, w = _scaled(spec.shape[:1], scale, 2) + _scaled(spec.shape[1:], scale, 32)
    start = time.perf_counter()
    release = spec.write(work / "release", (n, h, w))
    write_seconds = time.perf_counter() - start
    volume_mib = sum(p.stat().st_size for p in release.rglob("*") if p.is_file()) / 2 / MIB**2

    releases = {1: _without(release, work / "release1", spec.volume_ids[1]), 2: release}
    runs = {
        count: run_prepare_measured(
            name, [str(source), str(work / f"prepared{count}" / name)], work, f"prepare{count}"
        )
        for count, source in releases.items()
    }
    row: dict[str, Any] = {
        "dataset": name,
        "release": spec.release,
        "volume_shape": [n, h, w],
        "release_mib_per_volume": volume_mib,
        "fixture_write_s": write_seconds,
        "s_per_volume": runs[2]["prepare_s"] / 2,
        "cpu_s_per_volume": runs[2]["prepare_cpu_s"] / 2,
        "peak_rss_mib": {"after_imports": runs[1]["import_peak_rss_mib"],
                         "one_volume": runs[1]["peak_rss_mib"],
                         "two_volumes": runs[2]["peak_rss_mib"]},
        "one_volume": runs[1],
        "two_volumes": runs[2],
    }  # fmt: skip
    if steps > 0:
        row.update(_loading_ratio(name, work, spec.volume_ids, scale, steps))
    return row


def _loading_ratio(
    name: str, work: Path, volume_ids: tuple[str, str], scale: float, steps: int
) -> dict[str, Any]:
    """The trunk's loading ratio on the prepared two volumes, through the dataset's config."""
    split = write_split(work / "split.json", list(volume_ids), [], [], unit="volume")
    crop = [max(16, 16 * round(c * scale / 16)) for c in CROP]
    cfg = compose(
        "train",
        [f"dataset={name}", f"paths.data_dir={work / 'prepared2'}", f"dataset.split={split}",
         "augmentation=light_crop", f"augmentation.crop_size=[{crop[0]},{crop[1]}]"],
    )  # fmt: skip
    torch.manual_seed(0)
    dm = instantiate(cfg.dataset.datamodule)
    start = time.perf_counter()
    dm.setup()
    setup_seconds = time.perf_counter() - start
    figures = loading_vs_preloaded(dm, steps, int(cfg.dataset.num_classes),
                                   int(cfg.dataset.in_channels))  # fmt: skip
    batch = int(cfg.dataset.datamodule.batch_size)
    return {
        **figures,
        "datamodule_setup_s": setup_seconds,
        "train_input": f"{batch}x{cfg.dataset.in_channels}x{crop[0]}x{crop[1]}",
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets", default="all", help=f"'all' or comma-separated among {', '.join(DATASETS)}"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="factor on every volume dimension and the crop (e.g. 0.1)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=10,
        help="timed training steps per loading-ratio run (0: skip the ratio)",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="folder for releases and prepared data (default: a temporary one)",
    )
    args = parser.parse_args(argv)
    names = list(DATASETS) if args.datasets == "all" else [
        n.strip() for n in args.datasets.split(",") if n.strip()]  # fmt: skip
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        parser.error(f"--datasets={args.datasets!r}: unknown {unknown}; choose among "
                     f"{list(DATASETS)} or 'all'.")  # fmt: skip
    if not 0 < args.scale <= 1:
        parser.error(f"--scale={args.scale}: expected a factor in (0, 1].")
    warnings.filterwarnings("ignore")
    for logger in ("pytorch_lightning", "lightning.pytorch", "octseg"):
        logging.getLogger(logger).setLevel(logging.ERROR)

    result: dict[str, Any] = {
        "scale": args.scale,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "datasets": [],
    }
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            result["datasets"].append(benchmark_dataset(name, work, args.scale, args.steps))
    result["load_average_end"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"scale {args.scale}, {result['cpus']} CPUs, load average "
        f"{result['load_average_start'][0]:.1f} -> {result['load_average_end'][0]:.1f}"
    )
    for row in result["datasets"]:
        peak = row["peak_rss_mib"]
        ratio = row.get("loading_vs_preloaded_ratio")
        print(
            f"{row['dataset']:8s} {'x'.join(map(str, row['volume_shape'])):>14s}  "
            f"{row['s_per_volume']:6.2f} s/volume ({row['cpu_s_per_volume']:.2f} CPU s)  "
            f"peak RSS MiB imports {peak['after_imports']:.0f}, one volume "
            f"{peak['one_volume']:.0f}"
            f", two {peak['two_volumes']:.0f}  loading ratio "
            + ("-" if ratio is None else f"{ratio:.2f}")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
