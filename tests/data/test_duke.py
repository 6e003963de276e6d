"""DukeDataModule: both folder layouts, bad folders, split files, and the real export (if any)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from octseg.data.duke import DukeDataModule, detect_layout, load_duke_scans
from octseg.data.duke_prepare import MARKER_NAME, prepare_duke
from octseg.data.splits import load_split
from octseg.data.transforms import build_augmentation
from tests.conftest import DUKE_EXPORT
from tests.data.duke_fixtures import H, write_release

REPO = Path(__file__).resolve().parents[2]
SPLIT_DIR = REPO / "splits" / "duke"
SUBJECTS = {f"Subject_{i:02d}" for i in range(1, 11)}
requires_export = pytest.mark.skipif(
    not (DUKE_EXPORT / "images").is_dir(), reason=f"Duke DME export not found at {DUKE_EXPORT}"
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("duke")
    return prepare_duke(
        write_release(root / "release"), root / "duke_dme", ignore_index=254
    ).out_dir


def png_export(folder: Path, n_subjects: int = 10, width: int = 30) -> Path:
    """A tiny folder in the PNG export layout (no marker, no index.csv)."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for s in range(1, n_subjects + 1):
        for k in range(2):
            name = f"Subject_{s:02d}_{k:02d}"
            image = rng.integers(0, 256, (48, width), dtype=np.uint8)
            mask = np.repeat(np.linspace(0, 8.99, 48).astype(np.uint8)[:, None], width, axis=1)
            Image.fromarray(image).save(folder / "images" / f"{name}.png")
            Image.fromarray(mask).save(folder / "masks" / f"{name}.png")
    return folder


def test_prepared_layout_samples_and_boundaries(prepared: Path) -> None:
    assert detect_layout(prepared) == "prepared"
    dm = DukeDataModule(prepared, split="ynet", batch_size=2, eval_batch_size=3, ignore_index=255)
    dm.setup()
    assert [len(dm.datasets[p]) for p in ("train", "val", "test")] == [12, 4, 4]
    sample = dm.datasets["test"][0]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape[:2] == (1, H)
    assert sample["mask"].dtype == torch.int64 and sample["volume_id"] == "Subject_09"
    # The folder was prepared with ignore 254; the DataModule remaps it to its own 255
    # (the second traced B-scan has untraced columns inside the subject's crop).
    second = dm.datasets["test"][1]["mask"]
    assert set(second.unique().tolist()) == {*range(10), 255}
    assert dm.boundaries[sample["case_id"]].shape == (8, sample["mask"].shape[1])
    batch = next(iter(dm.test_dataloader()))
    assert batch["volume_id"] == ["Subject_09", "Subject_09", "Subject_10"]
    assert dm.split_info["layout"] == "prepared" and dm.split_info["protocol"] == "ynet"


def test_png_export_layout_and_logging(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = png_export(tmp_path / "duke_dme")
    assert detect_layout(folder) == "png_export"
    dm = DukeDataModule(folder, split="kfold", fold=2, batch_size=2)
    with caplog.at_level("INFO", logger="octseg.data.base"):
        dm.setup()
    assert "split kfold fold 2" in caplog.text and "png_export" in caplog.text
    assert {s for s in dm.datasets["test"].volume_ids} == {"Subject_05", "Subject_06"}
    assert all(b is None for b in dm.boundaries.values())


def test_relaynet_has_no_validation_loader(tmp_path: Path) -> None:
    dm = DukeDataModule(png_export(tmp_path / "d"), split="relaynet", batch_size=2)
    dm.setup()
    assert dm.val_dataloader() == [] and len(dm.datasets["train"]) == 16


def test_bad_folders_are_named(tmp_path: Path, prepared: Path) -> None:
    with pytest.raises(FileNotFoundError, match="paths.data_dir"):
        DukeDataModule(tmp_path / "missing").setup()
    folder = png_export(tmp_path / "labels", n_subjects=10)
    Image.fromarray(np.full((48, 30), 12, np.uint8)).save(folder / "masks" / "Subject_03_01.png")
    with pytest.raises(ValueError, match=r"Subject_03_01\.png has labels \[12\]"):
        load_duke_scans(folder)
    folder = png_export(tmp_path / "sizes", n_subjects=10)
    Image.fromarray(np.zeros((48, 29), np.uint8)).save(folder / "masks" / "Subject_04_00.png")
    with pytest.raises(ValueError, match=r"Subject_04_00\.png is \(48, 30\) but its mask"):
        load_duke_scans(folder)
    folder = png_export(tmp_path / "corrupt", n_subjects=10)
    (folder / "images" / "Subject_05_01.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=r"Subject_05_01\.png could not be read as a PNG"):
        load_duke_scans(folder)
    old = tmp_path / "old"
    shutil.copytree(prepared, old)
    marker = json.loads((old / MARKER_NAME).read_text())
    (old / MARKER_NAME).write_text(json.dumps({**marker, "format_version": 0}))
    with pytest.raises(ValueError, match="version 0.*--overwrite"):
        DukeDataModule(old).setup()


def test_split_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="known splits.*ynet"):
        load_split("paper2024", split_dir=SPLIT_DIR)
    with pytest.raises(ValueError, match="dataset.fold=5"):
        load_split("kfold", fold=5, split_dir=SPLIT_DIR)
    leaky = tmp_path / "leaky.json"
    leaky.write_text(json.dumps({"folds": [{"train": ["Subject_01"], "test": ["Subject_01"]}]}))
    with pytest.raises(ValueError, match="Subject_01.*train and test"):
        load_split(str(leaky))
    folder = png_export(tmp_path / "few", n_subjects=8)
    with pytest.raises(ValueError, match=r"Subject_09.*does not hold"):
        DukeDataModule(folder, split="ynet").setup()


@pytest.mark.parametrize(
    ("split", "n_folds"), [("ynet", 1), ("relaynet", 1), ("kfold", 5), ("ynet_kfold", 4)]
)
def test_published_splits_are_disjoint_by_subject(split: str, n_folds: int) -> None:
    spec = json.loads((SPLIT_DIR / f"{split}.json").read_text())
    assert len(spec["folds"]) == n_folds
    tested = []
    for fold in range(n_folds):
        parts = load_split(split, fold, SPLIT_DIR)
        train, val, test = (set(parts[p]) for p in ("train", "val", "test"))
        assert not (train & val) and not (train & test) and not (val & test)
        assert train | val | test == SUBJECTS and len(test) == 2
        tested += sorted(test)
    if split == "kfold":  # every subject is tested exactly once
        assert sorted(tested) == sorted(SUBJECTS)
    if split == "ynet":
        assert sorted(parts["test"]) == ["Subject_09", "Subject_10"] and len(parts["train"]) == 6
    if split == "ynet_kfold":  # one held-out test pair; every development subject validated once
        assert set(tested) == {"Subject_09", "Subject_10"}
        validated = [s for f in range(n_folds) for s in load_split(split, f, SPLIT_DIR)["val"]]
        assert sorted(validated) == [f"Subject_{i:02d}" for i in range(1, 9)]


def test_split_files_match_make_splits() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_splits.py"), "--check"], capture_output=True
    )
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.realdata
@requires_export
def test_shared_export_contents() -> None:
    scans = load_duke_scans(DUKE_EXPORT)
    assert len(scans) == 110 and len({s["volume_id"] for s in scans}) == 10
    labels = set()
    for scan in scans:
        h, w = scan["mask"].shape
        assert scan["image"].shape == (h, w) and h == 496 and 500 <= w <= 548
        labels |= set(np.unique(scan["mask"]).tolist())
    assert labels == set(range(10))


@pytest.mark.realdata
@requires_export
def test_one_training_step_on_real_data() -> None:
    torch.manual_seed(0)
    dm = DukeDataModule(
        DUKE_EXPORT, batch_size=2, train_transform=build_augmentation(crop_size=[128, 128], seed=0)
    )
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 10, 1)
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(
            net(batch["image"]), batch["mask"], ignore_index=255
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[1] < losses[0]


# ---------------------------------------------------------------- regression tests (issue 9)
def test_16_bit_images_keep_their_range(tmp_path: Path) -> None:
    folder = png_export(tmp_path / "d")
    image = (np.arange(48 * 30).reshape(48, 30) * 40).astype(np.uint16)  # up to 57560
    Image.fromarray(image).save(folder / "images" / "Subject_01_00.png")
    scans = {s["case_id"]: s for s in load_duke_scans(folder)}
    np.testing.assert_array_equal(scans["Subject_01_00"]["image"], image)  # not wrapped mod 256
    dm = DukeDataModule(folder, split="relaynet", mean=0.0, std=1.0)
    dm.setup()
    sample = next(s for s in (dm.datasets["train"][i] for i in range(16))
                  if s["case_id"] == "Subject_01_00")  # fmt: skip
    torch.testing.assert_close(sample["image"][0], torch.from_numpy(image / 65535.0).float())


def test_16_bit_mask_outside_the_label_range_is_refused(tmp_path: Path) -> None:
    folder = png_export(tmp_path / "d")
    mask = np.zeros((48, 30), np.uint16)
    mask[5, 5] = 259  # 259 % 256 == 3: a valid label once wrapped to 8 bit
    Image.fromarray(mask).save(folder / "masks" / "Subject_02_01.png")
    with pytest.raises(ValueError, match=r"Subject_02_01\.png has labels \[259\]"):
        load_duke_scans(folder)


def _index(folder: Path, header: str, names: list[str]) -> None:
    (folder / "index.csv").write_text("\n".join([header, *names]) + "\n")


def test_index_without_name_column_is_named(tmp_path: Path) -> None:
    folder = png_export(tmp_path / "d")
    _index(folder, "scan,height", ["Subject_01_00,48"])
    with pytest.raises(ValueError, match=r"index.csv has no 'name' column \(columns: \['scan'"):
        load_duke_scans(folder)


def test_duplicate_index_rows_are_refused(tmp_path: Path) -> None:
    folder = png_export(tmp_path / "d")
    names = [f"Subject_{s:02d}_{k:02d}" for s in range(1, 11) for k in range(2)]
    _index(folder, "name", [*names, "Subject_03_01"])
    with pytest.raises(ValueError, match=r"more than once.*'Subject_03_01': \[7, 22\]"):
        load_duke_scans(folder)


def test_unpaired_images_and_masks_are_named(tmp_path: Path) -> None:
    folder = png_export(tmp_path / "d")
    (folder / "masks" / "Subject_04_01.png").unlink()
    (folder / "images" / "Subject_07_00.png").unlink()
    with pytest.raises(ValueError, match=r"images without a mask': \['Subject_04_01'\].*"
                       r"masks without an image': \['Subject_07_00'\]"):  # fmt: skip
        load_duke_scans(folder)


def test_upper_case_png_suffix_is_read(tmp_path: Path) -> None:
    folder = png_export(tmp_path / "d")
    for sub in ("images", "masks"):
        (folder / sub / "Subject_05_00.png").rename(folder / sub / "Subject_05_00.PNG")
    names = {s["case_id"] for s in load_duke_scans(folder)}
    assert "Subject_05_00" in names and len(names) == 20


def test_damaged_marker_is_named(tmp_path: Path, prepared: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(prepared, broken)
    (broken / MARKER_NAME).write_text('{"format": "octseg-duke-prepared", ')
    with pytest.raises(ValueError, match=f"{MARKER_NAME} is damaged.*--overwrite"):
        load_duke_scans(broken)


def test_samples_carry_the_configured_spacing_and_bscan_position(prepared: Path) -> None:
    dm = DukeDataModule(prepared, spacing_um=[3.87, 11.3], bscan_spacing_um=123, batch_size=2)
    batch = next(iter(dm.test_dataloader()))
    assert batch["spacing_um"].shape == (2, 3)
    assert batch["spacing_um"][0].tolist() == pytest.approx([3.87, 11.3, 123.0])
    assert batch["bscan_index"].tolist() == [1, 3]  # the traced B-scans of the fixture volume
