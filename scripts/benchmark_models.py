"""Cost table of model configs: parameters, FLOPs, CPU latency, peak memory (docs/benchmarks.md).

python scripts/benchmark_models.py --models all --json out.json
python scripts/benchmark_models.py --models unet,ynet --variants   # + channels_last/bf16/compile
python scripts/benchmark_models.py --models unet_small --variants --shape 4 1 496 128  # crops
python scripts/benchmark_models.py --models watnet --variants --no-compile-variants
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from octseg.profiling import benchmark_models


def _markdown(rows: list[dict]) -> str:
    head = (
        "| model | variant | params | GFLOPs | fwd ms | fwd+bwd ms | peak MiB | compile s |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | - | error: {r['error']} | | | | | |")
            continue
        variant = "+".join(v for v in ("compile", "channels_last", "bf16") if r.get(v)) or "fp32"
        compile_s = (
            f"{r['compile_fwd_s']:.0f} / {r['compile_fwdbwd_s']:.0f}" if r.get("compile") else "-"
        )
        lines.append(
            f"| {r['model']} | {variant} | {r['params']:,} | {r['flops'] / 1e9:.1f} | "
            f"{r['cpu_fwd_ms']:.0f} | {r['cpu_fwdbwd_ms']:.0f} | {r['peak_mem_mb']:.0f} | "
            f"{compile_s} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="'all' or comma-separated config names")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also channels_last, bf16, compile, and all three together",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the base rows")
    parser.add_argument(
        "--no-compile-variants",
        action="store_true",
        help="with --variants: only channels_last and bf16 (compiling big nets takes minutes)",
    )
    parser.add_argument(
        "--shape", type=int, nargs=4, default=None, metavar=("B", "C", "H", "W"),
        help="input shape (default one 496 x 512 B-scan)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write {'models': [...]} here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    names = "all" if args.models == "all" else args.models.split(",")
    shape = {"shape": tuple(args.shape)} if args.shape else {}
    rows = benchmark_models(names, repeats=args.repeats, compile=args.compile, **shape)
    if args.variants:
        for variant in (
            {"channels_last": True},
            {"bf16": True},
            {"compile": True},
            {"compile": True, "channels_last": True, "bf16": True},
        ):
            if variant.get("compile") and args.no_compile_variants:
                continue
            if variant != {"compile": True} or not args.compile:
                rows += benchmark_models(names, repeats=args.repeats, **variant, **shape)
    print(_markdown(rows))  # noqa: T201 - a script's output
    if args.json:
        args.json.write_text(json.dumps({"models": rows}, indent=2))


if __name__ == "__main__":
    main()
