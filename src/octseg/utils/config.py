"""The one place that finds OCTSeg's config root (``conf/``) and composes configs from it.

Entry points run by Hydra (``train.py``, ``eval.py``) find ``conf/`` next to themselves; everything
else (tests, scripts, profiling, re-composing a run for evaluation) goes through this module:

* :func:`repo_root` — the checkout that holds ``conf/``: the ``OCTSEG_ROOT`` environment variable
  if set, else the source checkout this package was imported from (``src/octseg/utils/`` lies
  three levels below it);
* :func:`config_dir` — ``<repo_root>/conf``;
* :func:`compose` — composes ``conf/<config_name>.yaml`` with overrides as ``python train.py``
  would, with OCTSeg's resolvers registered and, given an output folder, the Hydra run config
  that ``${hydra:...}`` interpolations (``paths.output_dir``) need;
* :func:`group_options` — the options of a config group (``model`` -> ``["unet", ...]``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from octseg.utils.resolvers import register_resolvers

__all__ = ["ROOT_ENV", "repo_root", "config_dir", "compose", "group_options"]

ROOT_ENV = "OCTSEG_ROOT"
# The file whose presence marks a config root.
_MARKER = Path("conf") / "train.yaml"


def repo_root() -> Path:
    """The OCTSeg checkout whose ``conf/`` is used: ``$OCTSEG_ROOT`` if set, else the source
    checkout of the imported package.

    Raises:
        FileNotFoundError: if the folder found has no ``conf/train.yaml``; the message names
            ``OCTSEG_ROOT`` and the folder that was tried.
    """
    env = os.environ.get(ROOT_ENV)
    if env:
        root = Path(env).expanduser().resolve()
        if not (root / _MARKER).is_file():
            raise FileNotFoundError(
                f"{ROOT_ENV}={env!r} has no {_MARKER} (looked for {root / _MARKER}); set "
                f"{ROOT_ENV} to the OCTSeg checkout that holds conf/, or unset it to use the "
                "checkout this package was imported from."
            )
        return root
    root = Path(__file__).resolve().parents[3]
    if not (root / _MARKER).is_file():
        raise FileNotFoundError(
            f"OCTSeg's configs were not found: the octseg package at {Path(__file__).parents[1]} "
            f"is not inside a source checkout (no {root / _MARKER}). Set the {ROOT_ENV} "
            "environment variable to the OCTSeg checkout that holds conf/, or install the "
            "package from a checkout with `pip install -e .` (`make venv`)."
        )
    return root


def config_dir() -> Path:
    """``<repo_root>/conf`` (see :func:`repo_root`)."""
    return repo_root() / "conf"


def compose(
    config_name: str = "train",
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> DictConfig:
    """Composes ``conf/<config_name>.yaml`` with command-line style overrides.

    Works inside or outside a running Hydra application: a Hydra instance that was already
    initialised (e.g. by ``@hydra.main``) is restored afterwards. ``${paths.root_dir}`` resolves
    to :func:`repo_root`.

    Args:
        config_name: the root config, ``"train"`` or ``"eval"``.
        overrides: e.g. ``["model=unet_small", "trainer.max_epochs=1"]``.
        output_dir: the run folder. When given, the Hydra run config is returned as well
            (``cfg.hydra``, with ``hydra.runtime.output_dir`` set and registered as the current
            :class:`HydraConfig`), ``paths.output_dir`` is set to it and the folder is created.
            When ``None``, ``${hydra:...}`` interpolations cannot be resolved.

    Returns:
        The composed config (unresolved, as Hydra hands it to an application).

    Raises:
        FileNotFoundError: from :func:`repo_root` when ``conf/`` is not found.
    """
    root = repo_root()
    register_resolvers()
    with _fresh_hydra(root / "conf"):
        cfg = hydra_compose(
            config_name=config_name,
            overrides=list(overrides),
            return_hydra_config=output_dir is not None,
        )
    if output_dir is not None:
        out = Path(output_dir)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        if "paths" in cfg:
            # A literal, so that composing another config later cannot change this run's folder.
            with open_dict(cfg):
                cfg.paths.output_dir = str(out)
        out.mkdir(parents=True, exist_ok=True)
    return cfg


def group_options(group: str) -> list[str]:
    """The options of a config group, sorted (``"model"`` -> ``["monai_attention_unet", ...]``).

    Raises:
        ValueError: if ``conf/<group>`` has no options (names the folder).
    """
    with _fresh_hydra(config_dir()):
        options = GlobalHydra.instance().config_loader().get_group_options(group)
    if not options:
        raise ValueError(
            f"Config group {group!r} has no options in {config_dir() / group}; expected a folder "
            "of .yaml files (see README 'Configuration groups')."
        )
    return sorted(options)


@contextmanager
def _fresh_hydra(conf_dir: Path) -> Iterator[None]:
    """Initialises Hydra on ``conf_dir`` for the ``with`` block, then restores the Hydra instance
    that was active before (if any), e.g. the one of a running ``@hydra.main`` application."""
    previous = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()
        if previous is not None:
            GlobalHydra.instance().initialize(previous)
