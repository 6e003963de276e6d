"""The config root is found once (OCTSEG_ROOT or the source checkout) and configs compose as
Hydra would."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import octseg
from octseg.utils import config
from octseg.utils.config import ROOT_ENV, compose, config_dir, group_options, repo_root


def _checkout(root: Path, train_yaml: str = "answer: 42\n") -> Path:
    """A minimal config root: ``conf/train.yaml`` and a ``conf/model`` group with one option."""
    (root / "conf" / "model").mkdir(parents=True)
    (root / "conf" / "train.yaml").write_text(train_yaml)
    (root / "conf" / "model" / "tiny.yaml").write_text("width: 3\n")
    return root


def test_without_octseg_root_the_source_checkout_is_used(monkeypatch) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    checkout = Path(octseg.__file__).resolve().parents[2]
    assert repo_root() == checkout
    assert config_dir() == checkout / "conf"
    assert (config_dir() / "train.yaml").is_file()
    # ${paths.root_dir} is the same root (the ${repo_root:} resolver).
    assert OmegaConf.select(compose("train"), "paths.root_dir") == str(checkout)


def test_octseg_root_selects_the_config_root(tmp_path: Path, monkeypatch) -> None:
    root = _checkout(tmp_path / "other")
    monkeypatch.setenv(ROOT_ENV, str(root))
    assert repo_root() == root.resolve()
    assert compose("train").answer == 42
    assert group_options("model") == ["tiny"]


def test_an_octseg_root_without_conf_is_named_in_the_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=ROOT_ENV) as err:
        repo_root()
    assert str(tmp_path) in str(err.value)


def test_a_package_outside_a_checkout_asks_for_octseg_root(tmp_path: Path, monkeypatch) -> None:
    # As for a non-editable install: the package lies in site-packages, with no conf/ above it.
    monkeypatch.delenv(ROOT_ENV, raising=False)
    fake = tmp_path / "lib" / "site-packages" / "octseg" / "utils" / "config.py"
    monkeypatch.setattr(config, "__file__", str(fake))
    with pytest.raises(FileNotFoundError, match=f"Set the {ROOT_ENV} environment variable"):
        repo_root()


def test_compose_without_output_dir_has_no_hydra_node() -> None:
    cfg = compose("train", ["model=unet_small"])
    assert "hydra" not in cfg
    assert cfg.model.net._target_ == "octseg.models.unet.UNet"


def test_compose_with_output_dir_sets_the_run_folder_and_resolves(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = compose("train", ["dataset=synthetic_small", "loss=dice_ce_weighted"], output_dir=out)
    assert out.is_dir()
    assert cfg.hydra.runtime.output_dir == str(out)
    assert HydraConfig.get().runtime.output_dir == str(out)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["output_dir"] == str(out)
    assert resolved["paths"]["root_dir"] == str(repo_root())
    # ${inv_sqrt:...} needs OCTSeg's resolvers: one positive weight per class, mean 1.
    weights = resolved["loss"]["terms"]["dice_ce"]["class_weights"]
    assert len(weights) == cfg.dataset.num_classes
    assert sum(weights) / len(weights) == pytest.approx(1.0)


def test_compose_restores_a_running_hydra_instance(tmp_path: Path) -> None:
    other = _checkout(tmp_path / "other")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(other / "conf"), version_base="1.3"):
        compose("train", ["model=unet_small"])
        loader = GlobalHydra.instance().config_loader()
        assert loader.get_group_options("model") == ["tiny"]
    GlobalHydra.instance().clear()


def test_an_empty_group_is_an_error_naming_its_folder() -> None:
    with pytest.raises(ValueError, match="no_such_group"):
        group_options("no_such_group")
