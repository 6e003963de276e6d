"""Speed figures of the training trunk (and, with --models, of the networks).

    python scripts/benchmark.py                 # trunk figures, printed as a table
    python scripts/benchmark.py --json          # the same as JSON
    python scripts/benchmark.py --models all    # + params, FLOPs, CPU latency, memory per model

Trunk figures:
  loop_overhead_pct                 Lightning SegModule vs a bare PyTorch loop, same net/data/batch
  synthetic_scans_per_s_per_core    synthetic B-scans generated per second on one core (496x512)
  loading_vs_preloaded_ratio        train steps/s with real loading / steps/s on a preloaded batch
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings

import pytorch_lightning as pl
import torch

from octseg.data.synthetic import SyntheticDataModule, measure_throughput
from octseg.losses import DiceCELoss, Objective
from octseg.models.unet import UNet
from octseg.models.wrappers import PadToDivisor
from octseg.modules.seg_module import SegModule


def _datamodule(height: int, width: int, n: int, batch: int) -> SyntheticDataModule:
    dm = SyntheticDataModule(num_train=n, num_val=2, num_test=2, height=height, width=width,
                             seed=0, batch_size=batch, num_workers=0)
    dm.setup()
    return dm


def bare_loop_seconds(net: torch.nn.Module, loader, steps: int) -> float:
    """A plain PyTorch training loop over ``steps`` batches (after one warm-up step)."""
    loss_fn = DiceCELoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    wrapped = PadToDivisor(net)
    it = iter(loader)
    start = None
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn.compute(wrapped(batch["image"]).logits, batch["mask"])
        loss.backward()
        opt.step()
    return time.perf_counter() - start


class _StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.start: float | None = None
        self.end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 1 and self.start is None:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = time.perf_counter()


def lightning_seconds(net: torch.nn.Module, dm, steps: int, train_loader=None) -> float:
    """The same training through SegModule + Trainer (logging on, no validation)."""
    module = SegModule(net=net, objective=Objective({"dice_ce": DiceCELoss()}),
                       optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))
    timer = _StepTimer()
    trainer = pl.Trainer(max_steps=steps + 1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
                         log_every_n_steps=50)
    if train_loader is None:
        trainer.fit(module, datamodule=dm)
    else:
        trainer.fit(module, train_dataloaders=train_loader)
    return timer.end - timer.start


class _RepeatBatch(torch.utils.data.IterableDataset):
    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = batch, n

    def __iter__(self):
        for _ in range(self.n):
            yield self.batch


def loading_vs_preloaded(
    dm: pl.LightningDataModule,
    steps: int,
    num_classes: int,
    in_channels: int = 1,
    loading_seconds: float | None = None,
) -> dict[str, float]:
    """Training steps/s through ``dm``'s own loader (reading, augmentation, collation) divided
    by steps/s on one preloaded batch of it repeated: about 1 when loading is never the
    bottleneck, below 1 when the network waits for data.

    Both runs train ``UNet(in_channels, num_classes, base_channels=16)`` through
    :func:`lightning_seconds` from the same seed.

    Args:
        dm: any DataModule with a ``train_dataloader`` (synthetic, prepared, ...).
        steps: timed training steps per run (after one warm-up step).
        num_classes: classes of the network (the dataset's).
        in_channels: input channels of the network.
        loading_seconds: the time of the run through ``dm`` when already measured (the trunk
            figures time it alongside the bare loop); measured here when None.

    Returns:
        ``loading_vs_preloaded_ratio``, ``loading_s_per_step`` and ``preloaded_s_per_step``.
    """

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return UNet(in_channels, num_classes, base_channels=16)

    if loading_seconds is None:
        loading_seconds = lightning_seconds(net(), dm, steps)
    preloaded = next(iter(dm.train_dataloader()))
    loader = torch.utils.data.DataLoader(_RepeatBatch(preloaded, steps + 2), batch_size=None)
    preloaded_seconds = lightning_seconds(net(), dm, steps, train_loader=loader)
    return {
        "loading_vs_preloaded_ratio": preloaded_seconds / loading_seconds,
        "loading_s_per_step": loading_seconds / steps,
        "preloaded_s_per_step": preloaded_seconds / steps,
    }


def trunk_figures(steps: int, height: int, width: int, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    dm = _datamodule(height, width, n=batch * 8, batch=batch)
    # Alternate the two measurements to share any drift in machine load fairly.
    bare, light = [], []
    for _ in range(2):
        torch.manual_seed(0)
        bare.append(bare_loop_seconds(UNet(1, 10, base_channels=16), dm.train_dataloader(), steps))
        torch.manual_seed(0)
        light.append(lightning_seconds(UNet(1, 10, base_channels=16), dm, steps))
    t_bare, t_light = min(bare), min(light)
    loading = loading_vs_preloaded(dm, steps, num_classes=10, loading_seconds=t_light)
    return {
        "loop_overhead_pct": 100.0 * (t_light - t_bare) / t_bare,
        "bare_loop_s_per_step": t_bare / steps,
        "lightning_s_per_step": t_light / steps,
        "synthetic_scans_per_s_per_core": measure_throughput(n=200, height=496, width=512),
        "loading_vs_preloaded_ratio": loading["loading_vs_preloaded_ratio"],
        "steps": steps,
        "input": f"{batch}x1x{height}x{width}",
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per loop")
    parser.add_argument("--height", type=int, default=248)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--models", default=None,
                        help="'all' or comma-separated conf/model names to profile as well")
    parser.add_argument("--skip-trunk", action="store_true", help="only profile --models")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    result: dict = {}
    if not args.skip_trunk:
        result.update(trunk_figures(args.steps, args.height, args.width, args.batch))
    if args.models:
        from octseg.profiling import benchmark_models

        names = ("all" if args.models == "all"
                 else [n.strip() for n in args.models.split(",") if n.strip()])
        result["models"] = benchmark_models(names)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for key, value in result.items():
        if key != "models":
            print(f"{key:34s} {value:.3f}" if isinstance(value, float) else f"{key:34s} {value}")
    for row in result.get("models", []):
        cells = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        print("  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
