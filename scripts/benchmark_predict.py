"""Speed and memory of ``predict.py`` on the CPU (figures for docs/benchmarks.md).

    python scripts/benchmark_predict.py                   # all figures, printed as a table
    python scripts/benchmark_predict.py --json            # the same as JSON
    python scripts/benchmark_predict.py --bscans 4        # fewer B-scans per throughput run

Figures:
  bscans_per_s        B-scans (496 x 512, Spectralis size) predicted per second, batch 1, for
                      unet_small and Y-Net, without and with flip TTA (model load excluded)
  cpu_s_per_bscan     process CPU seconds per B-scan (all threads; less sensitive to other jobs
                      on a shared machine than the wall-clock rate)
  peak_mb_per_bscan   rise of the process's peak resident memory from "model loaded" to "B-scans
                      predicted" (one B-scan at a time: the memory one B-scan needs)
  volume_49_unet_small_s   wall and CPU time of ``python predict.py`` on one 49 x 496 x 512
                      volume (.npy) with unet_small: start-up, model load, prediction and every
                      output file (label maps, overlays, surfaces, thickness maps, ETDRS)

Networks are untrained (built from their configs with the Duke dataset's classes): speed and
memory do not depend on the weights. Every throughput figure runs in its own process, so peak
memory is measured per configuration. Torch threads follow the environment (OMP_NUM_THREADS;
the figures in docs/benchmarks.md use OMP_NUM_THREADS=2, the machine's cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH, VOLUME_BSCANS = 496, 512, 49
MODELS = ("unet_small", "ynet")


def make_checkpoint(model: str, folder: Path) -> Path:
    """An OCTSeg checkpoint of an untrained ``model`` for ``dataset=duke`` (as train.py writes
    one: weights, resolved run config and overrides)."""
    import hydra
    import torch
    from omegaconf import OmegaConf

    from octseg.utils.config import compose

    overrides = [f"model={model}", "dataset=duke", "logger=csv"]
    cfg = compose("train", overrides, output_dir=folder / model)
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    path = folder / model / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": module.state_dict(), "octseg_config": resolved,
         "octseg_overrides": overrides},
        path,
    )  # fmt: skip
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def worker(ckpt: str, tta: str | None, bscans: int) -> dict[str, float]:
    """Predicts ``bscans`` random B-scans (after one warm-up) in this process."""
    import torch
    from torch.utils.data import DataLoader

    from octseg.data.base import BScanRecord, PadCollate, dataset_from_records
    from octseg.evaluation.ensemble import build_predictor, load_trained_modules
    from octseg.evaluation.predictions import predict_items

    predictor = build_predictor(load_trained_modules([ckpt]), tta=tta)
    rng = np.random.default_rng(0)
    records = [
        BScanRecord((rng.random((HEIGHT, WIDTH)) * 255).astype(np.uint8), None, f"s{i}", "v", i)
        for i in range(bscans + 1)
    ]
    loader = DataLoader(dataset_from_records(records, None, 0.179, 0.211), batch_size=1,
                        collate_fn=PadCollate())  # fmt: skip
    items = predict_items(predictor, loader)
    before = _peak_mb()  # model loaded, nothing predicted yet
    next(items)  # warm-up (not timed)
    start, cpu_start = time.perf_counter(), time.process_time()
    count = sum(1 for _ in items)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "bscans_per_s": count / seconds,
        "cpu_s_per_bscan": cpu / count,
        "peak_mb_per_bscan": _peak_mb() - before,
        "torch_threads": torch.get_num_threads(),
    }


def _run_worker(ckpt: Path, tta: str | None, bscans: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", str(ckpt), "--tta", str(tta), "--bscans",
           str(bscans)]  # fmt: skip
    return json.loads(_run(cmd).stdout.strip().splitlines()[-1])


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONWARNINGS="ignore", WANDB_MODE="offline")


def volume_seconds(ckpt: Path, folder: Path) -> tuple[float, float]:
    """Wall and CPU time of ``python predict.py`` on one 49-B-scan volume."""
    rng = np.random.default_rng(1)
    volume = (rng.random((VOLUME_BSCANS, HEIGHT, WIDTH)) * 255).astype(np.uint8)
    np.save(folder / "volume.npy", volume)
    cmd = [sys.executable, str(ROOT / "predict.py"), f"ckpt_path={ckpt}",
           f"input={folder / 'volume.npy'}", f"output_dir={folder / 'out'}",
           "spacing_um=[3.87,11.3,123]", f"hydra.run.dir={folder / 'hydra'}"]  # fmt: skip
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    _run(cmd)
    seconds = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    written = len(list((folder / "out" / "volume" / "labels").glob("*.png")))
    if written != VOLUME_BSCANS:
        raise RuntimeError(f"predict.py wrote {written} label maps, expected {VOLUME_BSCANS}.")
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--bscans", type=int, default=8, help="B-scans per throughput run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tta", default="None", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tta = None if args.tta == "None" else args.tta
        print(json.dumps(worker(args.worker, tta, args.bscans)))
        return
    results: dict[str, object] = {
        "cpu_cores": len(os.sched_getaffinity(0)),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "bscan_size": [HEIGHT, WIDTH],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpts = {model: make_checkpoint(model, folder) for model in MODELS}
        for model in MODELS:
            for tta in (None, "flip"):
                figures = _run_worker(ckpts[model], tta, args.bscans)
                key = f"{model}{'+flip' if tta else ''}"
                results[key] = {k: round(v, 3) for k, v in figures.items()}
                print(key, results[key], file=sys.stderr, flush=True)  # partial results
        wall, cpu = volume_seconds(ckpts["unet_small"], folder)
        results["volume_49_unet_small_s"] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
    results["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for key, value in results.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
