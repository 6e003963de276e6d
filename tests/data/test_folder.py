"""The generic folder dataset: PNG/TIFF/NPY in 8/16 bit matched by name, name patterns,
split files and rules, clear errors, and a dev run through a user's own dataset config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from octseg.data.folder import FolderDataModule, rule_split
from tests.conftest import compose_config

H, W = 24, 20


def _layers(shift: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[6 + shift :] = 1
    mask[12 + shift :] = 2
    mask[18:] = 3
    return mask


def _folder(root: Path, subjects=("P01", "P02", "P03"), bscans: int = 2) -> Path:
    """P01: 8-bit PNG images + PNG labels; P02: 16-bit TIFF + TIFF labels; P03: .npy."""
    rng = np.random.default_rng(0)
    for s, subject in enumerate(subjects):
        for b in range(bscans):
            key = f"{subject}/vol1/{b:03d}"
            mask = _layers(b)
            (root / "images" / subject / "vol1").mkdir(parents=True, exist_ok=True)
            (root / "labels" / subject / "vol1").mkdir(parents=True, exist_ok=True)
            if s % 3 == 0:
                Image.fromarray(rng.integers(0, 255, (H, W), dtype=np.uint8)).save(
                    root / "images" / f"{key}.png")  # fmt: skip
                Image.fromarray(mask).save(root / "labels" / f"{key}.png")
            elif s % 3 == 1:
                Image.fromarray(rng.integers(0, 65535, (H, W), dtype=np.uint16)).save(
                    root / "images" / f"{key}.tif")  # fmt: skip
                Image.fromarray(mask).save(root / "labels" / f"{key}.tiff")
            else:
                np.save(root / "images" / f"{key}.npy", rng.random((H, W)).astype(np.float32))
                np.save(root / "labels" / f"{key}.npy", mask.astype(np.int64))
    return root


PATTERN = r"^(?P<volume>(?P<subject>P\d+)/[^/]+)/(?P<bscan>\d+)$"


def _dm(root: Path, **kwargs) -> FolderDataModule:
    args = {"num_classes": 4, "name_pattern": PATTERN, "split_rule": {"test": "P03"},
            "batch_size": 2, "spacing_um": [3.9, 11.0]} | kwargs  # fmt: skip
    return FolderDataModule(root, **args)


def test_formats_dtypes_ids_and_rule_split(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    dm = _dm(root, split_rule={"val": "P02", "test": "P03"})
    volumes = list(dm.read_volumes())
    assert [v[0].volume_id for v in volumes] == ["P01__vol1", "P02__vol1", "P03__vol1"]
    by_subject = {v[0].subject_id: v for v in volumes}
    assert by_subject["P01"][0].image.dtype == np.uint8
    assert by_subject["P02"][0].image.dtype == np.uint16
    assert by_subject["P03"][0].image.dtype == np.float32
    assert [r.bscan_index for r in by_subject["P01"]] == [0, 1]
    np.testing.assert_array_equal(by_subject["P02"][1].mask, _layers(1))
    assert by_subject["P01"][1].case_id == "P01__vol1__001"


def test_name_pattern_volume_groups_and_split_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    with pytest.raises(ValueError, match=r"Volume 'vol1' holds B-scans of subjects \['P01', "):
        list(_dm(root, name_pattern=r"^(?P<subject>P\d+)/(?P<volume>[^/]+)/").read_volumes())
    pattern = PATTERN
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"unit": "subject", "folds": [
        {"train": ["P01", "P02"], "val": [], "test": ["P03"]}]}))  # fmt: skip
    dm = _dm(root, name_pattern=pattern, split=str(split), split_rule=None)
    dm.setup()
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["test"]) == 2
    batch = next(iter(dm.test_dataloader()))
    assert batch["spacing_um"][0, :2].tolist() == pytest.approx([3.9, 11.0])
    assert batch["mask"].shape == (2, H, W)


def test_rule_split_checks() -> None:
    info = rule_split(["a1", "a2", "b1"], {"test": "^b"}, "x")
    assert (info["train"], info["test"], info["unit"]) == (["a1", "a2"], ["b1"], "subject")
    with pytest.raises(ValueError, match="both val and test"):
        rule_split(["a1"], {"val": "a", "test": "1"}, "x")
    with pytest.raises(ValueError, match="expected val and/or test"):
        rule_split(["a1"], {"train": "a"}, "x")


def test_errors_name_the_files(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", subjects=("P01",))
    with pytest.raises(ValueError, match="exactly one of dataset.split"):
        _dm(root, split="x.json")
    (root / "images" / "P01" / "vol1" / "005.png").write_bytes(
        (root / "images" / "P01" / "vol1" / "000.png").read_bytes())  # fmt: skip
    with pytest.raises(ValueError, match=r"images without a label map \['P01/vol1/005'\]"):
        list(_dm(root).read_volumes())
    assert len(list(_dm(root, allow_unlabelled=True).read_volumes())[0]) == 3
    (root / "images" / "P01" / "vol1" / "005.png").unlink()
    (root / "labels" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unknown type \['notes.txt'\]"):
        list(_dm(root).read_volumes())
    (root / "labels" / "notes.txt").unlink()
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(root / "labels/P01/vol1/000.png")
    with pytest.raises(ValueError, match=r"000.png: labels \[7\] outside 0..3"):
        list(_dm(root).read_volumes())
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(root / "labels/P01/vol1/000.png")
    with pytest.raises(ValueError, match=r"is \(25, 20\) but its image .* is \(24, 20\)"):
        list(_dm(root).read_volumes())
    with pytest.raises(ValueError, match="does not match dataset.datamodule.name_pattern"):
        list(_dm(root, name_pattern=r"^Q").read_volumes())
    with pytest.raises(FileNotFoundError, match="set dataset.datamodule.images"):
        list(_dm(root, images="scans").read_volumes())


def test_dev_run_through_a_users_dataset_config(tmp_path: Path) -> None:
    from octseg.training import train

    root = _folder(tmp_path / "data")
    conf = tmp_path / "my_confs" / "dataset"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text(
        "defaults: [folder, _self_]\n"
        "name: mine\nnum_classes: 4\nclass_names: [vitreous, inner, outer, choroid]\n"
        "spacing_um: [3.9, 11.0]\n"
        f"data_dir: {root}\n"
        "split_rule: {val: P02, test: P03}\n"
        "anatomy: {ordered_labels: [0, 1, 2, 3], surface_names: [ILM, MID, BM],\n"
        "          layer_labels: [1, 2], fluid_labels: []}\n"
        f"datamodule: {{name_pattern: '{PATTERN}'}}\n"
    )
    cfg = compose_config(tmp_path / "run", [
        f"hydra.searchpath=[file://{tmp_path / 'my_confs'}]", "dataset=mine", "debug=fdr",
        "model=unet_small", "logger=csv", "augmentation=none", "metrics=layers",
        "trainer.max_epochs=1", "~callbacks.rich_progress_bar", "~callbacks.model_summary",
    ], fast=False)  # fmt: skip
    try:
        metrics = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert cfg.model.net.num_classes == 4
    assert 0.0 <= metrics["test/dice"] <= 1.0 and "test/dice/outer" in metrics
