"""What eval.py does: evaluate a checkpoint's predictions on a test split, or label maps made by
any tool, through the single report writer in :mod:`octseg.metrics.evaluation`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from octseg.metrics.evaluation import (
    ScanPrediction,
    evaluate_label_maps,
    load_prediction_folders,
    read_label_map,
)
from octseg.utils.io import atomic_write_bytes

__all__ = ["evaluate_checkpoint", "evaluate_folders", "load_octseg_checkpoint", "restore_run_config"]

log = logging.getLogger(__name__)

# eval.yaml keys that mean something else (or nothing) to the training config.
EVAL_ONLY_KEYS = {"ckpt_path", "pred_dir", "gt_dir", "num_classes", "spacing", "save_predictions",
                  "task_name", "run_name"}


def load_octseg_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint written by train.py.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it cannot be read or was not written by OCTSeg's train.py.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such file. Point it at a run's "
                                "checkpoints/best.ckpt or last.ckpt.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for truncated/corrupt files
        raise ValueError(f"ckpt_path={path} could not be read as a PyTorch checkpoint ({err}); "
                         "the file may be truncated or not a checkpoint.") from err
    if not isinstance(ckpt, dict) or "octseg_config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"ckpt_path={path} is not an OCTSeg training checkpoint (it lacks the "
                         "stored run config); evaluate checkpoints written by train.py.")
    return ckpt


def _override_key(override: str) -> str:
    return override.lstrip("~+").split("=", 1)[0].split("@", 1)[0]


def restore_run_config(ckpt: dict[str, Any], user_overrides: list[str]) -> DictConfig:
    """Re-composes the training config from the overrides the run was started with, followed
    by the user's eval-time overrides (e.g. ``dataset.split=kfold``, ``metrics=layers``,
    ``paths.data_dir=...``), so that paths and data resolve on this machine."""
    train_overrides = [o for o in ckpt.get("octseg_overrides", [])
                       if _override_key(o) not in EVAL_ONLY_KEYS and not o.startswith("hydra")]
    extra = [o for o in user_overrides if _override_key(o) not in EVAL_ONLY_KEYS]
    cfg = compose(config_name="train", overrides=train_overrides + extra)
    stored = ckpt["octseg_config"]
    # The network is rebuilt exactly as trained, whatever the current defaults say.
    cfg.model.net = OmegaConf.create(stored["model"]["net"])
    return cfg


def _save_label_png(path: Path, labels: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    Image.fromarray(labels.astype(np.uint8)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _suite_kwargs(suite_cfg: DictConfig) -> dict[str, Any]:
    """The metric-suite config as keyword arguments of :func:`evaluate_label_maps`."""
    kwargs = dict(OmegaConf.to_container(suite_cfg, resolve=True))
    for key in ("_target_", "_convert_", "_recursive_"):
        kwargs.pop(key, None)
    return kwargs


def _finish(scans: list[ScanPrediction], suite_cfg: DictConfig, out_dir: Path) -> Any:
    result = evaluate_label_maps(scans, **_suite_kwargs(suite_cfg))
    result.write(out_dir)
    print(result.format_table())
    log.info("Results written to %s", out_dir)
    return result


def evaluate_checkpoint(cfg: DictConfig) -> Any:
    """Predicts the test split with a checkpoint and writes the evaluation files."""
    pl.seed_everything(cfg.seed, workers=True)
    ckpt = load_octseg_checkpoint(cfg.ckpt_path)
    user = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    run_cfg = restore_run_config(ckpt, user)
    out_dir = Path(cfg.paths.output_dir)

    datamodule = hydra.utils.instantiate(run_cfg.dataset.datamodule, train_transform=None)
    model = hydra.utils.instantiate(run_cfg.model)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    suite_cfg = run_cfg.metrics
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)
    batches = trainer.predict(model, dataloaders=datamodule.test_dataloader())
    keep_probs = "probabilistic" in list(suite_cfg.get("families", []))
    scans = []
    for batch in batches:
        for item in batch:
            scans.append(ScanPrediction(
                case_id=item["case_id"], volume_id=item["volume_id"],
                pred=item["pred"].numpy(), target=item["target"].numpy(),
                probs=item["probs"].numpy() if keep_probs else None,
            ))
            if cfg.get("save_predictions"):
                _save_label_png(out_dir / "predictions" / f"{item['case_id']}.png", item["pred"].numpy())
    return _finish(scans, suite_cfg, out_dir)


def evaluate_folders(cfg: DictConfig) -> Any:
    """Evaluates label maps in ``cfg.pred_dir`` against ``cfg.gt_dir`` (or the dataset's test
    split when ``gt_dir`` is not given).

    Class names, anatomy (layers, surfaces, fluid) and spacing come from ``cfg.dataset``;
    explicit ``num_classes`` and ``spacing`` override them. A ``num_classes`` that differs from
    the dataset's drops the dataset's class names and anatomy (overlap and distance metrics
    only), since those describe another label set.
    """
    suite = OmegaConf.to_container(cfg.metrics, resolve=True)
    if cfg.get("num_classes") is not None and int(cfg.num_classes) != int(suite["num_classes"]):
        suite["num_classes"] = int(cfg.num_classes)
        suite["class_names"] = None
        suite["anatomy"] = None
        suite["families"] = [m for m in suite.get("families", []) if m in ("overlap", "distance")]
    if cfg.get("spacing") is not None:
        if len(cfg.spacing) != 2:
            raise ValueError(f"spacing must be [axial_um, lateral_um], got {list(cfg.spacing)}.")
        suite["spacing_um"] = [float(v) for v in cfg.spacing]
    if cfg.get("gt_dir"):
        scans = load_prediction_folders(cfg.pred_dir, cfg.gt_dir, int(suite["num_classes"]),
                                        ignore_index=suite.get("ignore_index"))
    else:
        scans = _predictions_against_test_split(cfg)
    return _finish(scans, OmegaConf.create(suite), Path(cfg.paths.output_dir))


def _predictions_against_test_split(cfg: DictConfig) -> list[ScanPrediction]:
    """Pairs ``pred_dir/<case_id>.png|.npy`` with the dataset's test split."""
    datamodule = hydra.utils.instantiate(cfg.dataset.datamodule, train_transform=None)
    datamodule.setup()
    test = datamodule.datasets["test"]
    pred_dir = Path(cfg.pred_dir)
    scans = []
    for case_id, volume_id, mask in zip(test.case_ids, test.volume_ids, test.masks):
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
            raise ValueError(f"{found[0]}: prediction is {pred.shape} but the reference of "
                             f"{case_id!r} is {mask.shape}; predict at the scan's original size.")
        scans.append(ScanPrediction(case_id, volume_id, pred, np.asarray(mask)))
    return scans
