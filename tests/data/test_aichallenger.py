"""AI-Challenger 2018 retinal edema: parsing the release layout, label mapping, spacing, reruns,
partial releases, bad input, the published split and a dev run through ``train``."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from octseg.data.aichallenger import SPACING_UM, prepare_aichallenger
from octseg.data.prepared import read_prepared
from octseg.data.splits import load_split
from octseg.training import train
from tests.conftest import REPO_ROOT, compose_config

H, W, N = 32, 16, 3
OFFICIAL = load_split("official", 0, dataset="aichallenger")
TRAIN = OFFICIAL["train"][:2]  # two cubes of patient P0012
VAL, TEST = OFFICIAL["val"][:1], OFFICIAL["test"][:1]
SETS = {"train": "Edema_trainingset", "val": "Edema_validationset", "test": "Edema_testset"}


def _label(k: int) -> np.ndarray:
    label = np.zeros((H, W), np.uint8)
    label[4:8, 2:6] = 255  # REA
    label[10:12, :] = 191  # SRF
    label[20 : 21 + k, 8:] = 128  # PED
    return label


def _write_release(root: Path, parts: dict[str, list[str]] | None = None) -> Path:
    parts = parts or {"train": TRAIN, "val": VAL, "test": TEST}
    rng = np.random.default_rng(0)
    for part, volumes in parts.items():
        base = root / "release" / SETS[part]
        for vol in volumes:
            for n in range(1, N + 1):
                img = base / "original_images" / f"{vol}.img" / f"{n}.bmp"
                img.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8)).save(img)
                if part != "test":
                    lab = base / "label_images" / f"{vol}_labelMark" / f"{n}.bmp"
                    lab.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(_label(n)).save(lab)
    return root / "release"


def test_prepare_maps_labels_and_keeps_sets(tmp_path: Path) -> None:
    release = _write_release(tmp_path)
    summary = prepare_aichallenger(release, tmp_path / "out")
    assert (summary.volumes, summary.bscans, summary.labelled_bscans) == (4, 12, 9)
    assert summary.subjects == 3  # P0012 (two cubes), the val and the test patient
    volumes = {v[0].volume_id: v for v in read_prepared(tmp_path / "out", "aichallenger")}
    first = volumes[TRAIN[0]]
    assert [r.bscan_index for r in first] == [0, 1, 2]
    assert first[0].subject_id == "P0012" and first[0].image.dtype == np.uint8
    assert first[0].image.shape == (H, W)
    assert first[0].spacing_um == pytest.approx(SPACING_UM)
    mask = first[1].mask
    assert mask[5, 3] == 1 and mask[11, 0] == 2 and mask[21, 10] == 3 and mask[0, 0] == 0
    assert set(np.unique(mask).tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(mask, np.select(
        [_label(2) == 255, _label(2) == 191, _label(2) == 128], [1, 2, 3], 0))  # fmt: skip
    assert all(r.mask is None for r in volumes[TEST[0]])
    meta = json.loads((tmp_path / "out/volumes" / VAL[0] / "volume.json").read_text())["meta"]
    assert meta["part"] == "val" and meta["set"] == "Edema_validationset"


def test_rerun_skips_and_partial_release_lists_missing(tmp_path: Path, caplog) -> None:
    release = _write_release(tmp_path)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        first = prepare_aichallenger(release, out)
    assert len(first.missing) == 100 - 4 and OFFICIAL["train"][5] in first.missing
    assert "not in the release" in caplog.text
    stamp = (out / "volumes" / TRAIN[0] / "volume.json").stat().st_mtime_ns
    again = prepare_aichallenger(release, out)
    assert again.skipped_volumes == 4 and again.volumes == 4
    assert (out / "volumes" / TRAIN[0] / "volume.json").stat().st_mtime_ns == stamp
    only_train = prepare_aichallenger(release, tmp_path / "t", sets=["train"])
    assert only_train.volumes == 2 and len(only_train.missing) == 70 - 2


def test_reads_a_zip_archive(tmp_path: Path) -> None:
    release = _write_release(tmp_path, {"train": TRAIN[:1]})
    archive = tmp_path / "ai_challenger_fl2018_trainingset.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(release.rglob("*.bmp")):
            zf.write(f, f.relative_to(tmp_path).as_posix())
    summary = prepare_aichallenger(archive, tmp_path / "out", sets=["train"])
    assert (summary.volumes, summary.labelled_bscans) == (1, N)


def _break(release: Path, what: str) -> None:
    vol = release / SETS["train"] / "label_images" / f"{TRAIN[0]}_labelMark"
    if what == "value":
        bad = _label(1)
        bad[0, 0] = 77
        Image.fromarray(bad).save(vol / "1.bmp")
    elif what == "shape":
        Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(vol / "2.bmp")
    elif what == "no_labels":
        for f in vol.iterdir():
            f.unlink()
        vol.rmdir()
    elif what == "gap":
        (release / SETS["train"] / "original_images" / f"{TRAIN[0]}.img" / "2.bmp").unlink()
    elif what == "truncated":
        img = release / SETS["train"] / "original_images" / f"{TRAIN[0]}.img" / "3.bmp"
        img.write_bytes(img.read_bytes()[:40])


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("value", r"label values \[77\]"),
        ("shape", "a label must match its B-scan"),
        ("no_labels", "has no label_images"),
        ("gap", r"B-scans \[2\] are missing"),
        ("truncated", "could not be read"),
    ],
)
def test_bad_input_names_the_file(tmp_path: Path, what: str, message: str) -> None:
    release = _write_release(tmp_path, {"train": TRAIN[:1]})
    _break(release, what)
    with pytest.raises(ValueError, match=message) as err:
        prepare_aichallenger(release, tmp_path / "out")
    assert TRAIN[0] in str(err.value)


def test_wrong_folder_level_and_missing_source(tmp_path: Path) -> None:
    release = _write_release(tmp_path, {"train": TRAIN[:1]})
    with pytest.raises(ValueError, match="one folder level too deep"):
        prepare_aichallenger(release / SETS["train"] / "original_images", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_aichallenger(tmp_path / "nowhere", tmp_path / "out")


def test_published_split_is_the_official_patient_disjoint_one() -> None:
    def patients(names: list[str]) -> set[str]:
        return {n.split("_")[0] for n in names}

    sizes = [len(OFFICIAL[p]) for p in ("train", "val", "test")]
    assert sizes == [70, 15, 15] and OFFICIAL["unit"] == "volume"
    groups = [patients(OFFICIAL[p]) for p in ("train", "val", "test")]
    assert [len(g) for g in groups] == [35, 10, 10]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    other = load_split("val_as_test", 0, dataset="aichallenger")
    assert other["test"] == OFFICIAL["val"] and not other["val"]


def test_script_prints_a_summary(tmp_path: Path) -> None:
    release = _write_release(tmp_path, {"train": TRAIN[:1]})
    script = REPO_ROOT / "scripts" / "prepare_aichallenger.py"
    run = subprocess.run([sys.executable, str(script), str(release), str(tmp_path / "o"),
                          "--sets", "train"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "aichallenger prepared" in run.stdout
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "no"), str(tmp_path / "p")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "error:" in bad.stderr


def test_dev_run_trains_and_tests(tmp_path: Path) -> None:
    val = OFFICIAL["val"][:2]  # two labelled patients: one validates, one tests
    release = _write_release(tmp_path, {"train": TRAIN, "val": val})
    prepare_aichallenger(release, tmp_path / "data" / "aichallenger")
    split = tmp_path / "split.json"
    split.write_text(
        json.dumps(
            {
                "unit": "volume",
                "protocol": "fixture",
                "folds": [{"train": TRAIN, "val": val[:1], "test": val[1:]}],
            }
        )
    )
    cfg = compose_config(tmp_path / "run", [
        "dataset=aichallenger", f"paths.data_dir={tmp_path / 'data'}", f"dataset.split={split}",
        "debug=fdr", "model=unet_small", "logger=csv", "augmentation=none", "metrics=fluid",
        "metrics@val_metrics=fluid",
        "~callbacks.rich_progress_bar", "~callbacks.model_summary",
    ], fast=False)  # fmt: skip
    try:
        metrics = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert math.isfinite(metrics["test/dice"])
