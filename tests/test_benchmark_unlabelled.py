"""scripts/benchmark_unlabelled.py runs on a small generated release and reports both modes."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_benchmark_reports_the_draw_and_the_whole_part(capsys) -> None:
    spec = importlib.util.spec_from_file_location(
        "benchmark_unlabelled", REPO_ROOT / "scripts" / "benchmark_unlabelled.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--bscans", "16", "--draw", "4", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (figures["draw"]["bscans"], figures["draw"]["available"]) == (4, 16)
    assert (figures["decode_all"]["bscans"], figures["decode_all"]["available"]) == (16, 16)
    assert figures["draw"]["seconds"] >= 0 and figures["decode_all"]["seconds"] >= 0
