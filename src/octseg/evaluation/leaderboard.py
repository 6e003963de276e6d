"""Leaderboards: the reports of many runs (methods x folds x seeds of one dataset) in one table
with uncertainty.

``scripts/leaderboard.py RUN_OR_MULTIRUN_FOLDER ... [--out DIR]`` finds every ``metrics.json``
below the folders (read with :func:`~octseg.evaluation.report.read_report`), groups the runs by
method (:func:`method_label`) and computes, per method and metric:

* **mean ± SD over runs**: of each run's dataset-level value (``metrics.json`` ``dataset``);
  the runs of a method are its seeds and/or folds;
* **95 % confidence interval by bootstrap over subjects**: the resampling unit is the test
  volume (``metrics.json`` ``volumes``; in Duke DME and most OCT sets one volume is one subject's
  eye). A method's value for a volume is the mean over its runs that tested it (seeds are
  averaged; with k folds each volume is tested once), then the volumes are resampled with
  replacement (:func:`~octseg.evaluation.statistics.bootstrap_ci`, seeded). The interval is
  that of the mean over subjects; it reflects the sampling of subjects, not run-to-run (seed)
  variability, which the SD shows;
* **paired test against the best method** of that metric (best mean over runs): Wilcoxon
  signed-rank over the volumes both methods tested, paired by volume id
  (:func:`~octseg.evaluation.statistics.paired_wilcoxon`). With fewer than 6 pairs p < 0.05 is
  unreachable; such p-values are marked ``†``.

Outputs: ``leaderboard.md`` (one table per metric family: Dice per class, boundary MAD per
surface, thickness error per layer, in µm), ``leaderboard.csv`` (one row per method x metric),
``leaderboard.json`` (also every run and every per-volume value) and one box plot per metric
family (``boxplot_<family>.png``: per-volume values of each method).
"""

from __future__ import annotations

import fnmatch
import io
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from octseg.evaluation.report import read_report
from octseg.evaluation.statistics import bootstrap_ci, mean_sd, paired_wilcoxon
from octseg.utils.io import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
)

__all__ = [
    "DEFAULT_METRICS",
    "LEADERBOARD_COLUMNS",
    "Leaderboard",
    "MetricRow",
    "RunReport",
    "build_leaderboard",
    "find_reports",
    "higher_is_better",
    "load_runs",
    "log_to_wandb",
    "method_label",
]

log = logging.getLogger(__name__)

#: Metric keys (``fnmatch`` patterns over the flat report keys) a leaderboard shows by default:
#: Dice per class, boundary MAD per surface and thickness error per layer, with their means.
DEFAULT_METRICS = (
    "dice",
    "dice/*",
    "mad_um",
    "mad_um/*",
    "thickness_mae_um",
    "thickness_mae_um/*",
)
LEADERBOARD_COLUMNS = [
    "dataset",
    "method",
    "metric",
    "higher_is_better",
    "n_runs",
    "mean",
    "sd",
    "n_subjects",
    "subject_mean",
    "ci_low",
    "ci_high",
    "is_best",
    "n_pairs",
    "wilcoxon_statistic",
    "p_value",
    "underpowered",
]
_FAMILY_TITLES = {
    "dice": "Dice per class",
    "mad_um": "Boundary mean absolute distance (µm) per surface",
    "thickness_mae_um": "Layer thickness error (µm) per layer",
}
# Families (first key part) where smaller is better; every other metric is a score.
_LOWER_IS_BETTER = re.compile(
    r"(_um|_mm2|_mm3|brier|violation_rate|failures|prob_rmse|_err|error)", re.IGNORECASE
)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of a report key is better (Dice, IoU, ...) or worse (errors and
    distances in µm, areas' errors, Brier score, topology violations)."""
    return _LOWER_IS_BETTER.search(metric.split("/", 1)[0]) is None


@dataclass
class RunReport:
    """One run's report as the leaderboard uses it.

    Attributes:
        path: the ``metrics.json``.
        method: the row it belongs to (:func:`method_label`).
        dataset: the dataset name (``run.dataset``), or None when the report does not say.
        identity: ``model``, ``experiment``, ``unlabelled``, ``split``, ``fold``, ``seed``,
            ``run_name``.
        values: dataset-level values (flat keys).
        volumes: per-volume values ``{volume_id: {key: value}}``.
        class_names: the report's class names (must agree within a leaderboard).
        training: what training cost (``run.training``): ``trainer/global_step`` and
            ``trainer/fit_time_s`` among others; empty for evaluations of checkpoints.
    """

    path: Path
    method: str
    dataset: str | None
    identity: dict[str, Any]
    values: dict[str, float]
    volumes: dict[str, dict[str, float]]
    class_names: list[str] = field(default_factory=list)
    training: dict[str, float] = field(default_factory=dict)


def find_reports(folders: Iterable[str | Path]) -> list[Path]:
    """Every ``metrics.json`` at or below each folder (a run folder or a multirun folder), or
    the file itself when a ``metrics.json`` is given, in sorted order.

    Raises:
        FileNotFoundError: naming a folder that does not exist or holds no ``metrics.json``.
    """
    found: list[Path] = []
    for folder in folders:
        path = Path(folder)
        if path.is_file() and path.name == "metrics.json":
            found.append(path)
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such run folder (or metrics.json).")
        reports = sorted(path.rglob("metrics.json"))
        if not reports:
            raise FileNotFoundError(
                f"{path} holds no metrics.json at any depth. Runs write it when they test "
                "(train.py with test=true, or eval.py ckpt_path=<run>/checkpoints/best.ckpt); "
                "pass run or multirun folders of finished runs."
            )
        found.extend(reports)
    return sorted(dict.fromkeys(p.resolve() for p in found))


def method_label(run: dict[str, Any], path: Path) -> str:
    """A run's method: an explicit ``run.method`` (e.g. set by an ensemble's evaluation), else
    its experiment name when it ran one (``experiment=relaynet_duke``), else its model config
    name (``model=unet_small``); reports written before runs stored those fall back to the run
    name without its ``-s<seed>`` suffix, then to the folder. A run given another dataset's
    unlabelled B-scans (``+dataset@unlabelled=kermany``) is another method: ``+kermany`` is
    appended unless its name already says so (``sd_layernet_duke_kermany``)."""
    if run.get("method"):
        return str(run["method"])
    experiment = run.get("experiment")
    if experiment and experiment != "default":
        label = str(experiment)
    elif run.get("model"):
        label = str(run["model"])
    elif run.get("run_name"):
        label = re.sub(r"-s\d+$", "", str(run["run_name"]))
    else:
        label = path.parent.name
    unlabelled = run.get("unlabelled")
    return f"{label}+{unlabelled}" if unlabelled and str(unlabelled) not in label else label


def load_runs(folders: Iterable[str | Path], dataset: str | None = None) -> list[RunReport]:
    """Reads the reports below ``folders`` (:func:`find_reports`).

    Args:
        folders: run or multirun folders.
        dataset: keep only runs of this dataset (when the folders hold several).

    Raises:
        FileNotFoundError: as :func:`find_reports`.
        ValueError: for a damaged report (naming the file), when no report is of ``dataset``.
    """
    runs = []
    for path in find_reports(folders):
        report = read_report(path)
        run = dict(report.get("run") or {})
        runs.append(
            RunReport(
                path=path,
                method=method_label(run, path),
                dataset=run.get("dataset"),
                identity={
                    k: run.get(k)
                    for k in ("model", "experiment", "unlabelled", "split", "fold", "seed",
                              "run_name")
                },
                values=dict(report.get("dataset") or {}),
                volumes={str(k): dict(v) for k, v in (report.get("volumes") or {}).items()},
                class_names=list((report.get("settings") or {}).get("class_names") or []),
                training=dict(run.get("training") or {}),
            )
        )
    _warn_duplicates(runs)
    if dataset is not None:
        kept = [r for r in runs if r.dataset == dataset]
        if not kept:
            raise ValueError(
                f"--dataset {dataset}: none of the {len(runs)} reports is of that dataset "
                f"(found {sorted({str(r.dataset) for r in runs})})."
            )
        runs = kept
    return runs


def _warn_duplicates(runs: Sequence[RunReport]) -> None:
    """Warns about reports with the same method and identity: usually one run found twice
    (``train.py``'s report and ``eval.py``'s on its checkpoint), which would count it twice."""
    seen: dict[tuple, list[Path]] = {}
    for r in runs:
        key = (r.method, r.dataset, *(str(v) for v in r.identity.values()))
        seen.setdefault(key, []).append(r.path)
    for paths in seen.values():
        if len(paths) > 1:
            log.warning(
                "%d reports have the same method, dataset, split, fold, seed and run name (%s); "
                "each counts as a run. Pass only one report per run (e.g. the run folders, not "
                "also their eval.py folders).",
                len(paths),
                ", ".join(str(p) for p in paths),
            )


@dataclass
class MetricRow:
    """The leaderboard cell of one method and metric (see the module docstring)."""

    method: str
    metric: str
    higher_is_better: bool
    n_runs: int
    mean: float
    sd: float
    n_subjects: int
    subject_mean: float
    ci_low: float
    ci_high: float
    is_best: bool = False
    n_pairs: int = 0
    wilcoxon_statistic: float = math.nan
    p_value: float = math.nan
    underpowered: bool = False


def _check_one_table(runs: Sequence[RunReport]) -> str:
    if not runs:
        raise ValueError("No runs to put in a leaderboard.")
    datasets = {}
    for r in runs:
        datasets.setdefault(str(r.dataset), r.path)
    if len(datasets) > 1:
        examples = "; ".join(f"{name}: {path}" for name, path in sorted(datasets.items()))
        raise ValueError(
            f"The reports mix {len(datasets)} datasets ({examples}); a leaderboard compares "
            "methods on one dataset. Pass one dataset's run folders per call, or pick one with "
            "--dataset NAME."
        )
    names = {tuple(r.class_names) for r in runs if r.class_names}
    if len(names) > 1:
        first, second = sorted(names)[:2]
        raise ValueError(
            f"The reports of dataset {next(iter(datasets))} disagree on the class names "
            f"({list(first)} vs {list(second)}); they were made with different label sets and "
            "cannot share a table."
        )
    return next(iter(datasets))


def _select(keys: Iterable[str], patterns: Sequence[str]) -> list[str]:
    keys = list(keys)
    chosen: list[str] = []
    for pattern in patterns:
        for key in keys:
            if fnmatch.fnmatchcase(key, pattern) and key not in chosen:
                chosen.append(key)
    return chosen


def _subject_values(runs: Sequence[RunReport], metric: str) -> dict[str, float]:
    """Per volume: the mean over the runs that tested it (finite values only)."""
    collected: dict[str, list[float]] = {}
    for run in runs:
        for volume, values in run.volumes.items():
            value = values.get(metric)
            if value is not None and math.isfinite(float(value)):
                collected.setdefault(volume, []).append(float(value))
    return {v: float(np.mean(x)) for v, x in sorted(collected.items())}


@dataclass
class Leaderboard:
    """A leaderboard of one dataset: rows per method and metric, and what they came from."""

    dataset: str
    methods: list[str]
    metrics: list[str]
    rows: list[MetricRow]
    runs: list[RunReport]
    subjects: dict[str, dict[str, dict[str, float]]]
    settings: dict[str, Any]

    def row(self, method: str, metric: str) -> MetricRow:
        """The row of one method and metric.

        Raises:
            KeyError: naming the method and metric when absent.
        """
        for r in self.rows:
            if r.method == method and r.metric == metric:
                return r
        raise KeyError(f"no leaderboard row for method {method!r} and metric {metric!r}")

    def families(self) -> dict[str, list[str]]:
        """Metrics grouped by family (the key's first part), in the order shown."""
        out: dict[str, list[str]] = {}
        for m in self.metrics:
            out.setdefault(m.split("/", 1)[0], []).append(m)
        return out

    def to_markdown(self) -> str:
        """The leaderboard as Markdown: a runs table and one table per metric family."""
        level = round(100 * self.settings["level"])
        lines = [
            f"# Leaderboard: {self.dataset}",
            "",
            f"Methods ranked by `{self.settings['primary']}`. Cells: mean ± SD over runs "
            f"(seeds/folds) [{level} % CI of the mean over test subjects: percentile bootstrap, "
            f"{self.settings['n_resamples']} resamples of volumes, seed {self.settings['seed']}]"
            "; **bold**: best mean; `p`: two-sided Wilcoxon signed-rank test against the best, "
            "paired by volume; † fewer than 6 pairs (p < 0.05 unreachable).",
            "",
            "| method | runs | seeds | folds | splits | test volumes | training steps "
            "| training time (min) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method in self.methods:
            runs = [r for r in self.runs if r.method == method]
            seeds, folds, splits = (_identities(runs, k) for k in ("seed", "fold", "split"))
            volumes = {v for r in runs for v in r.volumes}
            steps = _training_mean(runs, "trainer/global_step", "{:.0f}")
            minutes = _training_mean(runs, "trainer/fit_time_s", "{:.1f}", scale=1 / 60)
            lines.append(
                f"| {method} | {len(runs)} | {seeds} | {folds} | {splits} | {len(volumes)} "
                f"| {steps} | {minutes} |"
            )
        for family, metrics in self.families().items():
            title = _FAMILY_TITLES.get(family, family)
            better = "higher" if higher_is_better(family) else "lower"
            columns = [m.split("/", 1)[1] if "/" in m else "mean" for m in metrics]
            lines += ["", f"## {title} ({better} is better)", ""]
            lines.append("| method | " + " | ".join(columns) + " |")
            lines.append("|---" * (len(columns) + 1) + "|")
            for method in self.methods:
                cells = [_cell(self.row(method, m), len(self.methods) > 1) for m in metrics]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
        """Writes ``leaderboard.md``, ``.csv``, ``.json`` and the box plots (atomically)."""
        out = Path(out_dir)
        rows = [{"dataset": self.dataset, **asdict(r)} for r in self.rows]
        paths = {
            "markdown": atomic_write_text(out / "leaderboard.md", self.to_markdown()),
            "csv": atomic_write_csv(out / "leaderboard.csv", rows, LEADERBOARD_COLUMNS),
            "json": atomic_write_json(
                out / "leaderboard.json",
                {
                    "format": "octseg-leaderboard",
                    "format_version": 1,
                    "dataset": self.dataset,
                    "settings": self.settings,
                    "methods": self.methods,
                    "metrics": self.metrics,
                    "rows": rows,
                    "runs": [
                        {
                            "path": str(r.path),
                            "method": r.method,
                            **r.identity,
                            "training": r.training,
                        }
                        for r in self.runs
                    ],
                    "subjects": self.subjects,
                },
            ),
        }
        if plots:
            for family, metrics in self.families().items():
                paths[f"boxplot_{family}"] = atomic_write_bytes(
                    out / f"boxplot_{family}.png", self._boxplot(family, metrics)
                )
        return paths

    def _boxplot(self, family: str, metrics: list[str]) -> bytes:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display
        import matplotlib.pyplot as plt

        cols = min(4, len(metrics))
        nrows = math.ceil(len(metrics) / cols)
        width = max(3.0, 0.6 * len(self.methods) + 1.5)
        fig, axes = plt.subplots(nrows, cols, figsize=(width * cols, 3.2 * nrows), squeeze=False)
        for ax, metric in zip(axes.ravel(), metrics, strict=False):
            data = [list(self.subjects[m].get(metric, {}).values()) for m in self.methods]
            ax.boxplot(data, showmeans=True)
            ax.set_xticks(range(1, len(self.methods) + 1), self.methods, rotation=45, ha="right")
            ax.set_title(metric, fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        for ax in axes.ravel()[len(metrics) :]:
            ax.axis("off")
        fig.suptitle(
            f"{self.dataset}: {_FAMILY_TITLES.get(family, family)} (one point per test volume)"
        )
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        return buffer.getvalue()


def _identities(runs: Sequence[RunReport], key: str) -> str:
    """The distinct values of one identity field, numbers in numeric order (2 before 10)."""
    values = {str(r.identity[key]) for r in runs if r.identity.get(key) is not None}
    return ", ".join(sorted(values, key=lambda text: (len(text), text))) or "-"


def _training_mean(
    runs: Sequence[RunReport], key: str, pattern: str, scale: float = 1.0
) -> str:
    """The mean of a training figure over the runs that recorded it (``-`` when none did)."""
    values = [scale * float(r.training[key]) for r in runs if key in r.training]
    return pattern.format(float(np.mean(values))) if values else "-"


def _fmt(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.2f}" if higher_is_better(metric) is False else f"{value:.3f}"


def _cell(row: MetricRow, bold_best: bool = True) -> str:
    if row.n_runs == 0:
        return "-"
    text = _fmt(row.mean, row.metric)
    if math.isfinite(row.sd):  # one run has no SD
        text += f" ± {_fmt(row.sd, row.metric)}"
    if row.is_best and bold_best:
        text = f"**{text}**"
    if row.n_subjects:
        text += f" [{_fmt(row.ci_low, row.metric)}, {_fmt(row.ci_high, row.metric)}]"
    if not row.is_best and math.isfinite(row.p_value):
        text += f" p={row.p_value:.3g}" + ("†" if row.underpowered else "")
    return text


def build_leaderboard(
    runs: Sequence[RunReport],
    metrics: Sequence[str] = DEFAULT_METRICS,
    level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Leaderboard:
    """Computes the leaderboard of runs of one dataset.

    Args:
        runs: the runs (:func:`load_runs`).
        metrics: report keys or ``fnmatch`` patterns, in display order; the first selected
            key ranks the methods.
        level: confidence level of the bootstrap intervals.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed.

    Raises:
        ValueError: for no runs, runs of several datasets or label sets, or metrics that no
            report holds (naming the keys that exist).
    """
    dataset = _check_one_table(runs)
    available = list(dict.fromkeys(k for r in runs for k in r.values))
    chosen = _select(available, metrics)
    if not chosen:
        raise ValueError(
            f"--metrics {list(metrics)} match no key of the reports; they hold e.g. "
            f"{available[:12]}."
        )
    by_method: dict[str, list[RunReport]] = {}
    for r in runs:
        by_method.setdefault(r.method, []).append(r)
    rows: list[MetricRow] = []
    subjects: dict[str, dict[str, dict[str, float]]] = {m: {} for m in by_method}
    for metric in chosen:
        metric_rows = []
        for method, method_runs in by_method.items():
            mean, sd = mean_sd([r.values.get(metric, math.nan) for r in method_runs])
            per_volume = _subject_values(method_runs, metric)
            subjects[method][metric] = per_volume
            values = np.array(list(per_volume.values()))
            low, high = bootstrap_ci(values, level, n_resamples, seed)
            metric_rows.append(
                MetricRow(
                    method=method,
                    metric=metric,
                    higher_is_better=higher_is_better(metric),
                    n_runs=sum(math.isfinite(r.values.get(metric, math.nan)) for r in method_runs),
                    mean=mean,
                    sd=sd,
                    n_subjects=int(values.size),
                    subject_mean=float(values.mean()) if values.size else math.nan,
                    ci_low=low,
                    ci_high=high,
                )
            )
        _compare_with_best(metric_rows, subjects, metric)
        rows += metric_rows
    primary = chosen[0]
    sign = 1.0 if higher_is_better(primary) else -1.0

    def rank_key(method: str) -> tuple[bool, float]:
        value = next(r.mean for r in rows if r.method == method and r.metric == primary)
        return (not math.isfinite(value), -sign * value if math.isfinite(value) else 0.0)

    methods = sorted(by_method, key=rank_key)
    return Leaderboard(
        dataset=dataset,
        methods=methods,
        metrics=chosen,
        rows=rows,
        runs=list(runs),
        subjects=subjects,
        settings={
            "level": level,
            "n_resamples": n_resamples,
            "seed": seed,
            "primary": primary,
            "resampling_unit": "test volume (subject)",
            "test": "two-sided Wilcoxon signed-rank (scipy.stats.wilcoxon) against the best",
        },
    )


def _compare_with_best(
    rows: list[MetricRow], subjects: dict[str, dict[str, dict[str, float]]], metric: str
) -> None:
    """Marks the best row of one metric and tests every other against it, pairing volumes."""
    finite = [r for r in rows if math.isfinite(r.mean)]
    if not finite:
        return
    best = max(finite, key=lambda r: r.mean if r.higher_is_better else -r.mean)
    best.is_best = True
    reference = subjects[best.method][metric]
    for row in rows:
        if row is best:
            continue
        own = subjects[row.method][metric]
        shared = sorted(set(own) & set(reference))
        if not shared:
            continue
        test = paired_wilcoxon([own[v] for v in shared], [reference[v] for v in shared])
        row.n_pairs = test.n_pairs
        row.wilcoxon_statistic = test.statistic
        row.p_value = test.p_value
        row.underpowered = test.underpowered


def log_to_wandb(board: Leaderboard, project: str, entity: str | None = None) -> None:
    """Logs the leaderboard rows as a W&B table (a run of job type ``leaderboard``). Honours
    ``WANDB_MODE`` (offline keeps it local for a later ``wandb sync``)."""
    import wandb

    run = wandb.init(
        project=project,
        entity=entity,
        job_type="leaderboard",
        name=f"leaderboard-{board.dataset}",
        config=board.settings,
    )
    try:
        table = wandb.Table(columns=LEADERBOARD_COLUMNS)
        for r in board.rows:
            row = {"dataset": board.dataset, **asdict(r)}
            table.add_data(*[row[c] for c in LEADERBOARD_COLUMNS])
        run.log({"leaderboard": table})
    finally:
        run.finish()
