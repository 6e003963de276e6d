"""Cost table of model configs: parameters, FLOPs, CPU latency, peak memory (docs/benchmarks.md).

python scripts/benchmark_models.py --models all --json out.json
python scripts/benchmark_models.py --models unet,ynet --variants   # + channels_last / bf16
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from octseg.utils.profiling import benchmark_models


def _markdown(rows: list[dict]) -> str:
    head = "| model | variant | params | GFLOPs | fwd ms | fwd+bwd ms | peak MiB |\n|---|---|---:|---:|---:|---:|---:|"
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | - | error: {r['error']} | | | | |")
            continue
        variant = "+".join(v for v in ("channels_last", "bf16") if r.get(v)) or "fp32"
        lines.append(
            f"| {r['model']} | {variant} | {r['params']:,} | {r['flops'] / 1e9:.1f} | "
            f"{r['cpu_fwd_ms']:.0f} | {r['cpu_fwdbwd_ms']:.0f} | {r['peak_mem_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="'all' or comma-separated config names")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", action="store_true", help="also channels_last and bf16")
    parser.add_argument("--json", type=Path, default=None, help="write {'models': [...]} here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    names = "all" if args.models == "all" else args.models.split(",")
    rows = benchmark_models(names, repeats=args.repeats)
    if args.variants:
        rows += benchmark_models(names, repeats=args.repeats, channels_last=True)
        rows += benchmark_models(names, repeats=args.repeats, bf16=True)
    print(_markdown(rows))  # noqa: T201 - a script's output
    if args.json:
        args.json.write_text(json.dumps({"models": rows}, indent=2))


if __name__ == "__main__":
    main()
