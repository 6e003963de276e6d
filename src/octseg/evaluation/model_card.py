"""Model cards: a ``MODEL_CARD.md`` beside a checkpoint that says what the model is, what it was
trained and tested on, which pixel spacing its micrometre figures assume, how well it did (with
confidence intervals) and what it is for: research, not clinical use.

Everything comes from the checkpoint (its stored run config and training state) and the run's
test report (``metrics.json`` in the run folder, written by ``train.py``'s test or ``eval.py``),
summarised with the leaderboard's statistics (one run: bootstrap CIs over test volumes).
``train.py`` writes the card next to ``best.ckpt`` after its test; ``scripts/model_card.py
ckpt_path=...`` writes one for any checkpoint.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from octseg.data.splits import load_split
from octseg.evaluation.checkpoint import load_checkpoint, run_dir_of
from octseg.evaluation.leaderboard import (
    DEFAULT_METRICS,
    build_leaderboard,
    higher_is_better,
    load_runs,
)
from octseg.utils.io import atomic_write_text

__all__ = ["MODEL_CARD_NAME", "build_model_card", "write_model_card"]

log = logging.getLogger(__name__)

MODEL_CARD_NAME = "MODEL_CARD.md"


def _paper_line(target: str | None) -> str:
    """The first line of the network module's docstring (the paper it implements)."""
    if not target or "." not in target:
        return ""
    try:
        module = importlib.import_module(target.rsplit(".", 1)[0])
    except ImportError:
        return ""
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def _split_lines(dataset: Mapping[str, Any]) -> list[str]:
    split = dataset.get("split")
    if split is None:
        return ["- Split: none (the dataset generates or lists its own train/val/test parts)."]
    fold = int(dataset.get("fold") or 0)
    split_dir = (dataset.get("datamodule") or {}).get("split_dir")
    lines = [f"- Split: `{split}`, fold {fold}."]
    try:
        info = load_split(str(split), fold, split_dir, dataset=dataset.get("name"))
    except (FileNotFoundError, ValueError) as err:
        return [*lines, f"  (split file not readable here: {err})"]
    for part in ("train", "val", "test"):
        names = info[part]
        lines.append(f"  - {part}: {len(names)} {info['unit']}s: {', '.join(names) or 'none'}")
    return lines


def _fmt(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.3f}" if higher_is_better(metric) else f"{value:.2f}"


def _metrics_lines(report: Path, ckpt_path: Path) -> list[str]:
    if not report.is_file():
        return [
            f"No test report next to this checkpoint ({report} is missing). Evaluate it with "
            f"`python eval.py ckpt_path={ckpt_path}` and point `scripts/model_card.py` at that "
            "report with `report=<eval run folder>/metrics.json`."
        ]
    (run,) = load_runs([report])
    # A module's own test_step reports other keys than the suite's: then show its scalars.
    if any(fnmatch.fnmatchcase(k, p) for k in run.values for p in DEFAULT_METRICS):
        patterns = list(DEFAULT_METRICS)
    else:
        patterns = [k for k in run.values if "/" not in k] or list(run.values)
    board = build_leaderboard([run], patterns)
    level = round(100 * board.settings["level"])
    measured = run.identity.get("run_name")
    lines = [
        f"From `{report}` (run `{measured}`). Value: over the test scans, as the report "
        f"computes it; {level} % CI: percentile bootstrap of the mean over test volumes "
        f"(subjects), {board.settings['n_resamples']} resamples, seed {board.settings['seed']}.",
        "",
        f"| metric | value | {level} % CI | test volumes |",
        "|---|---|---|---|",
    ]
    for row in board.rows:
        if not math.isfinite(row.mean):
            continue
        ci = f"[{_fmt(row.ci_low, row.metric)}, {_fmt(row.ci_high, row.metric)}]"
        lines.append(
            f"| {row.metric} | {_fmt(row.mean, row.metric)} | "
            f"{ci if row.n_subjects else '-'} | {row.n_subjects} |"
        )
    lines += ["", "Distances and thickness errors are in µm at the spacing above."]
    return lines


def build_model_card(ckpt_path: str | Path, report: str | Path | None = None) -> str:
    """The Markdown model card of a checkpoint.

    Args:
        ckpt_path: a checkpoint written by ``train.py``.
        report: the test report to summarise; default ``metrics.json`` in the checkpoint's run
            folder.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_checkpoint` and
            :func:`~octseg.evaluation.report.read_report`.
    """
    ckpt_path = Path(ckpt_path)
    ckpt = load_checkpoint(ckpt_path)
    cfg: Mapping[str, Any] = ckpt["octseg_config"]
    report_path = Path(report) if report else run_dir_of(ckpt_path, ckpt) / "metrics.json"
    dataset = cfg.get("dataset") or {}
    datamodule = dataset.get("datamodule") or {}
    model = cfg.get("model") or {}
    net = model.get("net") or {}
    target = net.get("_target_") or model.get("_target_")
    n_params = sum(int(v.numel()) for v in ckpt["state_dict"].values() if hasattr(v, "numel"))
    method = cfg.get("model_name") or target
    experiment = cfg.get("experiment_name")
    spacing = dataset.get("spacing_um")
    lines = [
        f"# Model card: {method} on {dataset.get('name')}",
        "",
        f"Checkpoint `{ckpt_path.name}` (epoch {ckpt.get('epoch')}, step "
        f"{ckpt.get('global_step')}), generated by OCTSeg from the checkpoint and its run's "
        "test report.",
        "",
        "**Not for clinical use.** This model is a research artefact. It is not a medical device, "
        "has not been validated for diagnosis, screening or treatment decisions, and must not be "
        "used for them.",
        "",
        "## Method",
        f"- Model config: `{method}`"
        + (f" (experiment `{experiment}`)" if experiment and experiment != "default" else ""),
        f"- Network: `{target}`, {n_params:,} parameters and buffers",
    ]
    paper = _paper_line(target)
    if paper:
        lines.append(f"- Implements: {paper}")
    lines += [
        f"- Loss: `{(cfg.get('loss') or {}).get('_target_')}`; optimizer: "
        f"`{(cfg.get('optimizer') or {}).get('_target_')}`; seed {cfg.get('seed')}; precision "
        f"`{(cfg.get('trainer') or {}).get('precision')}`",
        f"- Run: `{cfg.get('run_name')}`",
        "",
        "## Data",
        f"- Dataset: `{dataset.get('name')}`, {dataset.get('in_channels')} input channel(s), "
        f"{dataset.get('num_classes')} classes: {', '.join(dataset.get('class_names') or [])}",
        *_split_lines(dataset),
        "",
        "## Input and spacing assumptions",
        f"- Pixel spacing: {spacing[0]} µm axial x {spacing[1]} µm lateral"
        if spacing
        else "- Pixel spacing: not set (distances are in pixels)",
        f"- B-scan spacing: {dataset.get('bscan_spacing_um')} µm",
        "- A scan's own spacing (from its file or volume) replaces these in every µm figure; "
        "scans of another device, resolution or spacing shift all µm figures and may degrade "
        "the segmentation.",
    ]
    if datamodule.get("mean") is not None:
        lines.append(
            f"- Intensities scaled to [0, 1], then normalised with mean {datamodule.get('mean')} "
            f"and std {datamodule.get('std')} (the training data's)."
        )
    lines += [
        "",
        "## Test metrics",
        *_metrics_lines(report_path, ckpt_path),
        "",
        "## Intended use",
        "- Research on retinal OCT segmentation: benchmarking methods, studying layer and fluid "
        "segmentation, producing candidate segmentations for expert review.",
        f"- On B-scans like the training data (`{dataset.get('name')}`); other devices, "
        "protocols, pathologies or populations are outside what the test metrics cover.",
        "- Out of scope: any clinical decision; use without a human expert checking the output.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(
    ckpt_path: str | Path, report: str | Path | None = None, out: str | Path | None = None
) -> Path:
    """Writes :func:`build_model_card` to ``out`` (default ``MODEL_CARD.md`` beside the
    checkpoint), atomically; returns the path."""
    path = Path(out) if out else Path(ckpt_path).parent / MODEL_CARD_NAME
    atomic_write_text(path, build_model_card(ckpt_path, report))
    log.info("Model card written to %s", path)
    return path
