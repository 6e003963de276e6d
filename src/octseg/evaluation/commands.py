"""What ``eval.py`` does, and the test report of ``train.py``: evaluate a module on a split, a
checkpoint on its test split, or label maps made by any tool; all through
:func:`~octseg.evaluation.report.evaluate_label_maps` and one report writer."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from octseg.evaluation.ensemble import (
    as_path_list,
    build_predictor,
    describe,
    load_trained_modules,
)
from octseg.evaluation.label_maps import (
    ScanPrediction,
    check_label_range,
    load_prediction_folders,
    read_label_map,
)
from octseg.evaluation.predictions import predict_scans
from octseg.evaluation.report import (
    EvaluationResult,
    default_families,
    evaluate_label_maps,
    format_report,
    run_identity,
)
from octseg.postprocess import build_postprocess
from octseg.utils.io import atomic_write_png

__all__ = [
    "evaluate_by_test_step",
    "evaluate_checkpoint",
    "evaluate_folders",
    "evaluate_module",
    "suite_kwargs",
]

log = logging.getLogger(__name__)


def suite_kwargs(suite_cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """A metric-suite config (``conf/metrics/*.yaml``) as keyword arguments of
    :func:`evaluate_label_maps`."""
    if isinstance(suite_cfg, DictConfig):
        suite_cfg = OmegaConf.to_container(suite_cfg, resolve=True)
    kwargs = dict(suite_cfg)
    for key in ("_target_", "_convert_", "_recursive_"):
        kwargs.pop(key, None)
    return kwargs


def _postprocessed(
    scans: Iterable[ScanPrediction], fn: Callable[[torch.Tensor], torch.Tensor] | None
) -> Iterator[ScanPrediction]:
    """Applies a post-processing (:func:`octseg.postprocess.build_postprocess`) to every scan's
    label map; probabilities and references are left untouched."""
    for scan in scans:
        if fn is not None:
            pred = fn(torch.from_numpy(np.ascontiguousarray(scan.pred))).numpy()
            scan = dataclasses.replace(scan, pred=pred)
        yield scan


def _saving(scans: Iterator[ScanPrediction], folder: Path | None) -> Iterator[ScanPrediction]:
    for scan in scans:
        if folder is not None:
            atomic_write_png(folder / f"{scan.case_id}.png", scan.pred.astype(np.uint8))
        yield scan


def evaluate_module(
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    suite_cfg: DictConfig | dict[str, Any],
    out_dir: str | Path,
    split: str = "test",
    precision: str | int | None = None,
    save_predictions: bool = False,
    run_info: dict[str, Any] | None = None,
    postprocess: str | None = None,
) -> EvaluationResult:
    """Predicts a split with ``model`` (scan by scan at its true size), computes the suite and
    writes the report files into ``out_dir``; returns the result (also printed).

    Args:
        model: a module following the ``predict_step`` contract of
            :mod:`octseg.evaluation.predictions`. A module whose predictions use another label
            space than the dataset's (f-AnoGAN: fluid vs rest) defines
            ``evaluation_suite(settings: dict) -> dict``, which rewrites the suite settings.
        datamodule: provides ``<split>_dataloader()``.
        suite_cfg: the metric suite config (``conf/metrics/*.yaml``).
        out_dir: where ``metrics.json`` and the CSV tables go.
        split: ``test`` (default) or ``val``; anything else raises ValueError.
        precision: the trainer's precision (``bf16-mixed`` evaluates under bf16 autocast).
        save_predictions: also write each predicted label map to ``predictions/<scan>.png``.
        run_info: facts about the run stored under ``run`` in ``metrics.json``.
        postprocess: a post-processing of every predicted label map before the metrics (and
            before saving), e.g. ``topology`` (:func:`octseg.postprocess.build_postprocess`,
            with the suite's ``anatomy``); recorded under ``settings`` in ``metrics.json``.
    """
    if split not in ("test", "val"):
        raise ValueError(
            f"split={split!r}: expected test (the reported figures) or val (the validation "
            "subjects, where recipes and post-processing are chosen)."
        )
    kwargs = suite_kwargs(suite_cfg)
    if callable(getattr(model, "evaluation_suite", None)):
        kwargs = model.evaluation_suite(kwargs)
    fn = build_postprocess(postprocess, kwargs.get("anatomy") or {})
    keep_probs = "probabilistic" in list(kwargs.get("families") or [])
    datamodule.setup("test" if split == "test" else "validate")
    loader = getattr(datamodule, f"{split}_dataloader")()
    scans = _postprocessed(
        predict_scans(model, loader, keep_probs=keep_probs, precision=precision), fn
    )
    folder = Path(out_dir) / "predictions" if save_predictions else None
    result = evaluate_label_maps(_saving(scans, folder), **kwargs)
    result.settings["postprocess"] = _postprocess_name(fn, postprocess)
    result.run = dict(run_info or {})
    _finish(result, out_dir, split)
    return result


def evaluate_by_test_step(
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    out_dir: str | Path,
    class_names: list[str],
    run_info: dict[str, Any] | None = None,
    ckpt_path: str | None = None,
) -> EvaluationResult | None:
    """Tests a module that reports through its own ``test_step`` (``predicts_scans`` off, e.g.
    f-AnoGAN's B-scan detection on an image-level set) with ``trainer.test`` and writes what it
    logs under ``test/`` as the report (rank 0; other ranks get None)."""
    trainer.test(
        model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False, verbose=False
    )
    if not trainer.is_global_zero:
        return None
    values = {
        k[len("test/") :]: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith("test/") and v.numel() == 1
    }
    result = EvaluationResult(
        dataset=values,
        run=dict(run_info or {}),
        class_names=list(class_names),
        settings={"source": f"{type(model).__name__}.test_step"},
    )
    result.write(out_dir)
    print(format_report(values, result.class_names, title="test"))
    return result


def _postprocess_name(fn: Callable | None, name: str | None) -> str | None:
    """The ``postprocess`` entry of a report's settings: None when off, else the name."""
    return None if fn is None else str(name).strip().lower()


def _finish(result: EvaluationResult, out_dir: str | Path, title: str) -> None:
    result.write(out_dir)
    print(result.format_table(title))
    log.info("Results written to %s", out_dir)


def evaluate_checkpoint(cfg: DictConfig) -> EvaluationResult:
    """``eval.py ckpt_path=...``: predicts the test split (``split=val``: the validation
    subjects) of the checkpoint's own run config (the user's overrides on top) and writes the
    evaluation files. ``ckpt_path=[a,b,...]`` evaluates the fold ensemble (mean probabilities;
    the first checkpoint's run config gives the data) and ``tta=flip`` adds flip test-time
    augmentation."""
    split = str(cfg.get("split") or "test")
    pl.seed_everything(cfg.seed, workers=True)
    user = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    members = load_trained_modules(
        as_path_list(cfg.ckpt_path), user, device=cfg.get("device") or "cpu"
    )
    run_cfg = members[0].run_cfg
    datamodule = hydra.utils.instantiate(run_cfg.dataset.datamodule, train_transform=None)
    info = {
        **run_identity(run_cfg),
        **describe(members),
        "tta": cfg.get("tta"),
        "evaluated_split": split,
    }
    if not getattr(members[0].module, "predicts_scans", True):
        module = members[0].module
        if len(members) > 1 or cfg.get("tta") or split != "test":
            raise ValueError(
                f"{type(module).__name__} (this checkpoint) reports through its own test_step, "
                "which eval.py runs for one checkpoint on the test split only; got "
                f"{len(members)} checkpoint(s), tta={cfg.get('tta')!r}, split={split!r}."
            )
        trainer = pl.Trainer(
            accelerator="cpu" if str(cfg.get("device") or "cpu") == "cpu" else "auto",
            precision=cfg.get("precision") or "32-true",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        result = evaluate_by_test_step(
            trainer,
            module,
            datamodule,
            cfg.paths.output_dir,
            list(run_cfg.dataset.get("class_names") or []),
            run_info=info,
        )
        assert result is not None  # one process
        return result
    model = build_predictor(members, tta=cfg.get("tta"))
    return evaluate_module(
        model,
        datamodule,
        run_cfg.metrics,
        cfg.paths.output_dir,
        split=split,
        precision=cfg.get("precision"),
        save_predictions=bool(cfg.get("save_predictions")),
        run_info=info,
        postprocess=cfg.get("postprocess"),
    )


def _folder_suite(cfg: DictConfig) -> dict[str, Any]:
    """The suite for folder evaluation: the dataset's (``dataset=...``), or one built from
    ``num_classes`` and ``spacing_um`` alone (overlap and distances; no anatomy)."""
    if cfg.get("dataset") is not None:
        suite = suite_kwargs(cfg.metrics)
        if cfg.get("num_classes") is not None and int(cfg.num_classes) != suite["num_classes"]:
            raise ValueError(
                f"num_classes={cfg.num_classes} but dataset={cfg.dataset.name} has "
                f"{suite['num_classes']} classes; drop one of the two settings."
            )
    else:
        if cfg.get("num_classes") is None:
            raise ValueError(
                "eval.py pred_dir=... needs the label set: give num_classes=K (and "
                "'spacing_um=[AXIAL_UM,LATERAL_UM]'), or dataset=<name> to use a dataset's "
                "classes, anatomy and spacing."
            )
        if cfg.get("spacing_um") is None:
            raise ValueError(
                "eval.py pred_dir=... num_classes=K needs the pixel spacing for distances in "
                "micrometres: add 'spacing_um=[AXIAL_UM,LATERAL_UM]' (quoted in zsh), or use "
                "dataset=<name>."
            )
        wanted = OmegaConf.select(cfg, "metrics.families", default=None) or []
        families = [f for f in default_families(None, False) if not wanted or f in wanted]
        suite = {
            "num_classes": int(cfg.num_classes),
            "families": families,
            "ignore_index": int(cfg.get("ignore_index", 255)),
        }
    if cfg.get("spacing_um") is not None:
        spacing = [float(v) for v in cfg.spacing_um]
        if len(spacing) != 2 or min(spacing) <= 0:
            raise ValueError(
                f"spacing_um must be [axial_um, lateral_um] (positive), got "
                f"{list(cfg.spacing_um)}."
            )
        suite["spacing_um"] = spacing
    return suite


def evaluate_folders(cfg: DictConfig) -> EvaluationResult:
    """``eval.py pred_dir=...``: evaluates label maps in ``pred_dir`` against ``gt_dir``, or
    against the test split of ``dataset=...`` when ``gt_dir`` is not given."""
    suite = _folder_suite(cfg)
    fn = build_postprocess(cfg.get("postprocess"), suite.get("anatomy") or {})
    if cfg.get("gt_dir"):
        scans = load_prediction_folders(
            cfg.pred_dir,
            cfg.gt_dir,
            int(suite["num_classes"]),
            ignore_index=suite.get("ignore_index"),
        )
    elif cfg.get("dataset") is not None:
        scans = _predictions_against_test_split(cfg, int(suite["num_classes"]))
    else:
        raise ValueError(
            "eval.py pred_dir=... needs gt_dir=<reference folder> or "
            "dataset=<name> (its test split is the reference)."
        )
    result = evaluate_label_maps(_postprocessed(scans, fn), **suite)
    result.settings["postprocess"] = _postprocess_name(fn, cfg.get("postprocess"))
    result.run = {"pred_dir": str(Path(cfg.pred_dir).resolve())}
    _finish(result, cfg.paths.output_dir, "test")
    return result


def _predictions_against_test_split(cfg: DictConfig, num_classes: int) -> list[ScanPrediction]:
    """Pairs ``pred_dir/<case_id>.png|.npy`` with the dataset's test split."""
    datamodule = hydra.utils.instantiate(cfg.dataset.datamodule, train_transform=None)
    datamodule.setup("test")
    test = datamodule.datasets["test"]
    pred_dir = Path(cfg.pred_dir)
    scans = []
    for case_id, volume_id, mask in zip(test.case_ids, test.volume_ids, test.masks, strict=False):
        candidates = [pred_dir / f"{case_id}{ext}" for ext in (".png", ".npy")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise FileNotFoundError(
                f"pred_dir={pred_dir} has no prediction for test scan {case_id!r} (expected "
                f"{candidates[0].name} or {candidates[1].name}); the dataset's test split "
                f"({cfg.dataset.name}) lists {len(test.case_ids)} scans."
            )
        pred = read_label_map(found[0])
        if pred.shape != mask.shape:
            raise ValueError(
                f"{found[0]}: prediction is {pred.shape} but the reference of "
                f"{case_id!r} is {mask.shape}; predict at the scan's original size."
            )
        check_label_range(pred, num_classes, found[0])
        scans.append(ScanPrediction(case_id, volume_id, pred, np.asarray(mask)))
    return scans
