"""Another dataset's training part as unlabelled B-scans (``unlabelled_from``): what is lent
(its training part only, its class selection, a seeded draw), how it is read (this dataset's
normalisation, only the drawn B-scans decoded), ids and spacing, and what is refused."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import octseg.data.prepared as prepared
from octseg.data.image_sets import ImageLevelDataModule
from octseg.data.kermany import CLASSES, prepare_kermany
from tests.conftest import REPO_ROOT
from tests.data.image_level_fixtures import write_release
from tests.data.test_base import VolumesModule, records, split_file
from tests.data.test_kermany import FILES

TRAIN_CASES = {Path(f).stem for f in FILES if "/train/" in f}  # 6 B-scans, 5 patients


@pytest.fixture(scope="module")
def kermany_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kermany")
    prepare_kermany(write_release(root / "release", FILES), root / "kermany")
    return root / "kermany"


def _kermany(data_dir: Path, **kwargs) -> ImageLevelDataModule:
    split_dir = str(REPO_ROOT / "splits" / "kermany")
    return ImageLevelDataModule(data_dir, "kermany", CLASSES, split="official",
                                split_dir=split_dir, **kwargs)  # fmt: skip


def _labelled(tmp_path: Path, spacing=(3.9, 11.3, 120.0), **kwargs) -> VolumesModule:
    """Two training volumes of 3 labelled B-scans (16 x 20), one val and one test volume."""
    volumes = [records(v, 3, 20, spacing=spacing) for v in ("a", "b", "v", "t")]
    split = split_file(tmp_path, train=["a", "b"], val=["v"], test=["t"])
    return VolumesModule(volumes, batch_size=4, split=split, mean=0.5, std=0.25, **kwargs)


def _lent(dataset) -> list[int]:
    return [i for i, cid in enumerate(dataset.case_ids) if cid.startswith("kermany.")]


def test_the_training_part_is_lent_unlabelled_with_this_datasets_normalisation(
    tmp_path: Path, kermany_dir: Path
) -> None:
    dm = _labelled(tmp_path, unlabelled_from=_kermany(kermany_dir))
    dm.setup()
    train = dm.datasets["train"]
    lent = _lent(train)
    assert len(train) == 6 + 6 and len(lent) == 6
    assert {train.case_ids[i].removeprefix("kermany.") for i in lent} == TRAIN_CASES
    assert all(train.masks[i] is None for i in lent)
    assert {train.volume_ids[i] for i in lent} >= {"kermany.train-CNV-1001"}
    # Validation and test are this dataset's own, untouched.
    assert len(dm.datasets["val"]) == len(dm.datasets["test"]) == 3
    assert not any(c.startswith("kermany.") for p in ("val", "test")
                   for c in dm.datasets[p].case_ids)  # fmt: skip
    # Read with this dataset's mean 0.5 and std 0.25, from the prepared PNG's raw values.
    i = train.case_ids.index("kermany.CNV-1001-2")
    raw = prepared._read_png(kermany_dir / "volumes/train-CNV-1001/images/CNV-1001-2.png")
    expected = (torch.as_tensor(raw, dtype=torch.float32) / 255 - 0.5) / 0.25
    torch.testing.assert_close(train[i]["image"][0], expected)
    # The source knows no spacing while this dataset does: NaN, so every sample has the key.
    assert torch.isnan(train[i]["spacing_um"]).all()
    assert train[0]["spacing_um"].tolist()[:2] == pytest.approx([3.9, 11.3])
    info = dm.split_info["unlabelled_from"]
    assert (info["dataset"], info["bscans"], info["available"]) == ("kermany", 6, 6)


def test_batches_mix_labelled_and_lent_scans(tmp_path: Path, kermany_dir: Path) -> None:
    dm = _labelled(tmp_path, unlabelled_from=_kermany(kermany_dir))
    dm.batch_size = 12
    batch = next(iter(dm.train_dataloader()))
    lent = torch.tensor([c.startswith("kermany.") for c in batch["case_id"]])
    assert batch["labelled"].tolist() == (~lent).tolist() and lent.sum() == 6
    assert (batch["mask"][lent] == 255).all() and (batch["mask"][~lent] != 255).any()


def test_the_sources_class_selection_and_a_seeded_draw(tmp_path: Path, kermany_dir: Path) -> None:
    normal = _labelled(tmp_path, unlabelled_from=_kermany(kermany_dir, classes=["NORMAL"]))
    normal.setup()
    names = {normal.datasets["train"].case_ids[i] for i in _lent(normal.datasets["train"])}
    assert names == {"kermany.NORMAL-1004-1", "kermany.NORMAL-1005-2"}

    def drawn(seed: int) -> list[str]:
        dm = _labelled(tmp_path, unlabelled_from=_kermany(kermany_dir),
                       unlabelled_max_bscans=3, labelled_seed=seed)  # fmt: skip
        dm.setup()
        train = dm.datasets["train"]
        return [train.case_ids[i] for i in _lent(train)]

    first = drawn(0)
    assert len(first) == 3 and drawn(0) == first
    assert any(drawn(seed) != first for seed in (1, 2, 3))


def test_only_the_drawn_scans_are_decoded(
    kermany_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real = prepared._read_png

    def counting(path: Path) -> np.ndarray:
        reads.append(Path(path).stem)
        return real(path)

    monkeypatch.setattr(prepared, "_read_png", counting)
    scans, available = _kermany(kermany_dir).unlabelled_training_scans(2, seed=5)
    assert available == 6 and len(scans) == 2
    assert sorted(reads) == sorted(s.case_id for s in scans)
    assert all(s.mask is None and s.image.shape[0] == 24 for s in scans)


def test_a_dataset_without_spacing_gets_lent_scans_without_it(
    tmp_path: Path, kermany_dir: Path
) -> None:
    dm = _labelled(tmp_path, spacing=None, unlabelled_from=_kermany(kermany_dir))
    dm.setup()
    assert all("spacing_um" not in dm.datasets["train"][i] for i in (0, 7))


def test_the_sources_own_spacing_is_kept(tmp_path: Path, kermany_dir: Path) -> None:
    source = _kermany(kermany_dir, spacing_um=[3.87, 11.5])
    dm = _labelled(tmp_path, unlabelled_from=source)
    dm.setup()
    train = dm.datasets["train"]
    spacing = train[_lent(train)[0]]["spacing_um"].tolist()
    assert spacing[:2] == pytest.approx([3.87, 11.5]) and math.isnan(spacing[2])


def test_what_cannot_serve_is_refused(tmp_path: Path, kermany_dir: Path) -> None:
    with pytest.raises(ValueError, match="must be an OCTSeg DataModule"):
        _labelled(tmp_path, unlabelled_from="kermany")
    with pytest.raises(ValueError, match="unlabelled=drop leaves unlabelled B-scans out"):
        _labelled(tmp_path, unlabelled_from=_kermany(kermany_dir), unlabelled="drop")
    with pytest.raises(ValueError, match="unlabelled_max_bscans must be a positive integer"):
        _labelled(tmp_path, unlabelled_from=_kermany(kermany_dir), unlabelled_max_bscans=0)
    with pytest.raises(ValueError, match="holds no label maps"):
        _kermany(kermany_dir, unlabelled_from=_labelled(tmp_path))
    # The same data as its own source could lend this split's validation or test subjects.
    same = _labelled(tmp_path, unlabelled_from=_labelled(tmp_path))
    with pytest.raises(ValueError, match="reads the same data as this dataset"):
        same.setup()


def test_the_flag_semi_supervised_modules_need() -> None:
    assert not VolumesModule([]).has_unlabelled_training_scans
    assert VolumesModule([], labelled_fraction=0.5).has_unlabelled_training_scans
    baseline = VolumesModule([], labelled_fraction=0.5, unlabelled="drop")
    assert not baseline.has_unlabelled_training_scans
    assert VolumesModule([], unlabelled_from=VolumesModule([])).has_unlabelled_training_scans
