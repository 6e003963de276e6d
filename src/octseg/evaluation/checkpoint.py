"""OCTSeg training checkpoints: loading, the run they belong to, restoring their config, and the
checks that keep a resume or an evaluation from silently using another setup.

Every checkpoint written by ``train.py`` holds (see :class:`octseg.utils.callbacks.StoreRunConfig`)
the resolved run config (``octseg_config``), the command-line overrides it was composed from
(``octseg_overrides``) and the W&B run id. Used by ``eval.py``, by resume in ``train.py`` and by
prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

__all__ = [
    "RESUME_ALLOW_KEY",
    "check_resume_compatible",
    "load_checkpoint",
    "override_key",
    "restore_run_config",
    "resume_overrides",
    "run_dir_of",
    "stored_overrides",
]

#: ``train.py ckpt_path=X +resume_allow_changes=true`` resumes even though model, dataset, split
#: or loss differ from the checkpoint's.
RESUME_ALLOW_KEY = "resume_allow_changes"

# Overrides that describe one invocation, not the run: never carried into a resumed or evaluated
# composition.
_INVOCATION_KEYS = {
    "ckpt_path",
    RESUME_ALLOW_KEY,
    "pred_dir",
    "gt_dir",
    "num_classes",
    "spacing_um",
    "save_predictions",
    "tta",
    "split",
    "precision",
    "device",
    "task_name",
    "run_name",
}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint written by ``train.py`` (on the CPU).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it cannot be read or was not written by OCTSeg's ``train.py``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={path}: no such file. Point it at a run's checkpoints/best.ckpt or "
            "last.ckpt."
        )
    try:
        # Our own checkpoints hold the run config (plain containers), so the full unpickler;
        # memory-mapped, so the checks before a resume do not read the weights into memory.
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # torch raises several types for truncated/corrupt files
        raise ValueError(
            f"ckpt_path={path} could not be read as a PyTorch checkpoint ({err}); the file may "
            "be truncated or not a checkpoint."
        ) from err
    if not isinstance(ckpt, dict) or "octseg_config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(
            f"ckpt_path={path} is not an OCTSeg training checkpoint (it lacks the stored run "
            "config); use checkpoints written by train.py."
        )
    return ckpt


def override_key(override: str) -> str:
    """The config key an override sets: ``+model.x@y=1`` -> ``model.x``."""
    return override.lstrip("~+").split("=", 1)[0].split("@", 1)[0]


def stored_overrides(ckpt: Mapping[str, Any]) -> list[str]:
    """The overrides a run was composed from, minus invocation-only and Hydra keys."""
    return [
        o
        for o in ckpt.get("octseg_overrides", [])
        if override_key(o) not in _INVOCATION_KEYS and not override_key(o).startswith("hydra")
    ]


def run_dir_of(ckpt_path: str | Path, ckpt: Mapping[str, Any]) -> Path:
    """The run folder a checkpoint belongs to: ``<run>/checkpoints/<name>.ckpt`` -> ``<run>``
    (so a moved run folder still works), else the output folder stored in it."""
    path = Path(ckpt_path).resolve()
    if path.parent.name == "checkpoints":
        return path.parent.parent
    return Path(ckpt["octseg_config"]["paths"]["output_dir"])


def resume_overrides(ckpt_path: str | Path, user_overrides: Sequence[str]) -> list[str]:
    """The overrides of a resumed run: the checkpoint's own, then the user's on top (a key the
    user sets again replaces the stored one), and ``hydra.run.dir`` pointing at the original
    run folder so the run continues there.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_checkpoint`.
    """
    ckpt = load_checkpoint(ckpt_path)
    user = list(user_overrides)
    user_keys = {override_key(o) for o in user}
    merged = [o for o in stored_overrides(ckpt) if override_key(o) not in user_keys]
    if "hydra.run.dir" not in user_keys:
        merged.append(f"hydra.run.dir={run_dir_of(ckpt_path, ckpt)}")
    return merged + user


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _compared(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What must not change on resume: the network, the dataset and its split, the source of
    unlabelled B-scans, the loss, and the optimizer's type (its state cannot be loaded into
    another optimizer)."""
    dataset = cfg.get("dataset") or {}
    model = cfg.get("model") or {}
    return {
        "model": {k: v for k, v in model.items() if k in ("_target_", "net")},
        "dataset": dataset.get("name"),
        "dataset.split": dataset.get("split"),
        "dataset.fold": dataset.get("fold"),
        "unlabelled": (cfg.get("unlabelled") or {}).get("name"),
        "loss": cfg.get("loss"),
        "optimizer": (cfg.get("optimizer") or {}).get("_target_"),
    }


def check_resume_compatible(
    stored_config: Mapping[str, Any], cfg: DictConfig | Mapping[str, Any], ckpt_path: str | Path
) -> None:
    """Refuses a resume whose model, dataset, split or loss differ from the checkpoint's,
    unless ``+resume_allow_changes=true``; an optimizer of another type is always refused.

    Raises:
        ValueError: naming every differing setting, both values and how to proceed.
    """
    before, after = _compared(stored_config), _compared(_plain(cfg))
    differing = [k for k in before if _plain(before[k]) != _plain(after[k])]
    if not differing:
        return
    details = "; ".join(f"{k}: checkpoint {before[k]!r}, now {after[k]!r}" for k in differing)
    if "optimizer" in differing:
        raise ValueError(
            f"Cannot resume {ckpt_path} with another optimizer ({details}). Its optimizer state "
            "belongs to the checkpoint's optimizer: drop the optimizer override, or start a new "
            "run (without ckpt_path)."
        )
    if not bool(_plain(cfg).get(RESUME_ALLOW_KEY, False)):
        raise ValueError(
            f"Resuming {ckpt_path} with a different setup: {details}. A resumed run re-uses the "
            "checkpoint's own overrides; drop the conflicting ones, or add "
            f"+{RESUME_ALLOW_KEY}=true if the change is intended."
        )


def restore_run_config(
    ckpt: Mapping[str, Any], user_overrides: Sequence[str], config_name: str = "train"
) -> DictConfig:
    """Re-composes the training config of a checkpoint (within an initialised Hydra): its
    stored overrides, then the user's (e.g. ``dataset.split=kfold``, ``metrics=layers``,
    ``paths.data_dir=...``) so that paths and data resolve on this machine. The network is
    rebuilt exactly as trained, whatever the current defaults say. Works inside a running
    Hydra application and outside one (scripts, tests)."""
    from octseg.utils.config import compose

    user = [o for o in user_overrides if override_key(o) not in _INVOCATION_KEYS]
    user_keys = {override_key(o) for o in user}
    stored = [o for o in stored_overrides(ckpt) if override_key(o) not in user_keys]
    cfg = compose(config_name=config_name, overrides=stored + user)
    cfg.model.net = OmegaConf.create(ckpt["octseg_config"]["model"]["net"])
    return cfg

