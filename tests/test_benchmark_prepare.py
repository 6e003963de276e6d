"""scripts/benchmark_prepare.py on small volumes (--scale 0.1): it prepares each dataset's
generated release with one and with two volumes and reports the documented figures (the
loading ratio is null, with its reason, for the image-level sets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "benchmark_prepare.py"
RUN_KEYS = {"import_s", "import_cpu_s", "import_peak_rss_mib", "prepare_s", "prepare_cpu_s",
            "peak_rss_mib"}  # fmt: skip
ROW_KEYS = {"dataset", "release", "volume_shape", "release_mib_per_volume", "fixture_write_s",
            "s_per_volume", "cpu_s_per_volume", "peak_rss_mib", "one_volume", "two_volumes",
            "loading_vs_preloaded_ratio", "loading_s_per_step", "preloaded_s_per_step",
            "datamodule_setup_s", "train_input", "steps"}  # fmt: skip
IMAGE_LEVEL = {"kermany", "oct_c8", "octid"}  # no masks: no loading ratio


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip


def _check_rows(result: dict, names: list[str]) -> dict[str, dict]:
    assert {"scale", "cpus", "torch_threads", "load_average_start", "load_average_end"} <= set(
        result
    )
    rows = {row["dataset"]: row for row in result["datasets"]}
    assert list(rows) == names
    for row in rows.values():
        assert ROW_KEYS <= set(row) and RUN_KEYS <= set(row["one_volume"])
        assert set(row["peak_rss_mib"]) == {"after_imports", "one_volume", "two_volumes"}
        assert row["s_per_volume"] > 0
        if row["dataset"] in IMAGE_LEVEL:
            assert row["loading_vs_preloaded_ratio"] is None and row["loading_ratio_reason"]
        else:
            assert row["loading_vs_preloaded_ratio"] > 0 and "loading_ratio_reason" not in row
        # The peak can only grow from the imports to the end of a run.
        assert row["peak_rss_mib"]["one_volume"] >= row["peak_rss_mib"]["after_imports"] > 0
        assert row["train_input"] == "4x1x48x16"  # the 496 x 128 crop scaled by 0.1
    return rows


def test_small_run_reports_the_documented_keys(tmp_path) -> None:
    done = _run("--datasets", "retouch", "--scale", "0.1", "--steps", "1", "--json",
                "--work-dir", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _check_rows(json.loads(done.stdout), ["retouch"])
    assert rows["retouch"]["volume_shape"] == [13, 102, 51]  # 128 x 1024 x 512 scaled by 0.1
    assert rows["retouch"]["two_volumes"]["prepare_s"] > 0
    assert list(tmp_path.iterdir()) == []  # the temporary folder is removed


def test_an_image_level_set_reports_no_loading_ratio_and_the_rest(tmp_path) -> None:
    done = _run("--datasets", "kermany", "--scale", "0.1", "--steps", "1", "--json",
                "--work-dir", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    row = _check_rows(json.loads(done.stdout), ["kermany"])["kermany"]
    assert row["volume_shape"] == [2, 50, 51]  # one patient's 23 B-scans of 496 x 512 scaled
    assert "no masks" in row["loading_ratio_reason"] and row["datamodule_setup_s"] > 0


@pytest.mark.slow
def test_every_dataset_and_the_table(tmp_path) -> None:
    # Fifteen datasets, two preparations and two short trainings each: minutes on a busy CPU.
    done = _run("--scale", "0.1", "--steps", "1", "--json", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    names = ["duke", "hcms", "retouch", "aroi", "goals", "oimhs", "octa500", "umn_dme",
             "umn_amd", "duke_rpedc", "duke_chiu2012", "aichallenger", "kermany", "oct_c8",
             "octid"]  # fmt: skip
    rows = _check_rows(json.loads(done.stdout), names)
    assert rows["hcms"]["volume_shape"] == [5, 50, 102]  # 49 x 496 x 1024 scaled by 0.1
    assert rows["goals"]["volume_shape"] == [1, 80, 110]  # one image per eye stays one
    assert rows["oimhs"]["volume_shape"] == [3, 51, 512]  # the composite halves keep 512
    table = _run("--datasets", "aroi", "--scale", "0.1", "--steps", "0")
    assert table.returncode == 0, table.stderr[-3000:]
    assert (
        "aroi" in table.stdout
        and "s/volume" in table.stdout
        and "loading ratio -" in (table.stdout)
    )


def test_unknown_dataset_is_refused_with_the_choices() -> None:
    done = _run("--datasets", "hcms,nope")
    assert done.returncode == 2 and "nope" in done.stderr and "retouch" in done.stderr
