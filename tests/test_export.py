"""scripts/export.py and octseg.export: exported files reproduce PyTorch at any size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from octseg.export import export_module
from octseg.models.unet import UNet
from octseg.models.wrappers import PadToDivisor
from tests.conftest import REPO_ROOT, compose_config


class _Module(torch.nn.Module):
    """The part of a trained module that export reads: the wrapped network under ``.net``."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = PadToDivisor(net)


def _unet() -> _Module:
    torch.manual_seed(0)
    return _Module(UNet(in_channels=1, num_classes=4, base_channels=4, depth=3)).eval()


def test_onnx_and_torchscript_match_pytorch_on_odd_sizes(tmp_path: Path) -> None:
    import onnxruntime as ort

    module = _unet()
    result = export_module(
        module, tmp_path / "unet", in_channels=1, example_hw=(64, 48),
        formats=["onnx", "torchscript"], metadata={"num_classes": 4},
    )  # fmt: skip
    assert set(result.files) == {"onnx", "torchscript"}
    assert all(p.is_file() for p in result.files.values())
    assert not list(tmp_path.glob(".*.tmp"))  # temporaries are gone
    x = torch.randn(1, 1, 496, 523)  # a Duke B-scan size, not a multiple of the divisor
    with torch.no_grad():
        expected = module.net(x).logits.numpy()
    session = ort.InferenceSession(str(result.files["onnx"]), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == (1, 4, 496, 523)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    scripted = torch.jit.load(str(result.files["torchscript"]))
    np.testing.assert_allclose(scripted(x).detach().numpy(), expected, atol=1e-4)
    side = json.loads((tmp_path / "unet.json").read_text())
    assert side["num_classes"] == 4 and side["dynamic_hw"] is True
    assert side["min_hw"] == [9, 9] and set(side["max_abs_error"]) == set(result.files)
    assert side["checked_hw"] == [[64, 48], [75, 69], [65, 45]]


def test_a_graph_that_does_not_match_pytorch_is_not_kept(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="static_hw"):
        export_module(_unet(), tmp_path / "bad", 1, (64, 48), ["torchscript"], atol=-1.0)
    assert not list(tmp_path.iterdir())


def test_bad_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="export.formats"):
        export_module(_unet(), tmp_path / "m", 1, formats=["tflite"])
    with pytest.raises(ValueError, match="size divisor"):
        export_module(_unet(), tmp_path / "m", 1, example_hw=(4, 64), formats=["onnx"])
    with pytest.raises(ValueError, match="no segmentation network"):
        export_module(torch.nn.Linear(2, 2), tmp_path / "m", 1, formats=["onnx"])


@pytest.mark.slow
def test_size_dependent_network_exports_for_any_size(tmp_path: Path) -> None:
    # Y-Net's Fourier units split the spectrum by the input size; the graph stays symbolic.
    from octseg.models.ynet import YNet

    torch.manual_seed(0)
    module = _Module(YNet(in_channels=1, num_classes=3, base_channels=8)).eval()
    result = export_module(module, tmp_path / "ynet", 1, (64, 64), formats=["onnx", "pt2"])
    assert result.dynamic_hw and max(result.max_abs_error.values()) < 1e-4
    assert len(result.checked_hw) == 3
    fixed = export_module(module, tmp_path / "fixed", 1, formats=["onnx"], static_hw=(64, 80))
    assert fixed.dynamic_hw is False and fixed.checked_hw == [(64, 80)]


@pytest.mark.slow
def test_export_cli_on_a_trained_checkpoint(tmp_path: Path) -> None:
    from octseg.training import train

    cfg = compose_config(tmp_path / "run", ["model=unet_small", "dataset.datamodule.width=133"])
    train(cfg)
    GlobalHydra.instance().clear()
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    env = dict(os.environ, OCTSEG_LOG_DIR=str(tmp_path / "logs"), PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "export.py"), f"ckpt_path={ckpt}",
         "formats=[onnx]", "example_hw=[64,64]"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    onnx_file = tmp_path / "run" / "export" / "best.onnx"
    assert onnx_file.is_file(), proc.stdout
    side = json.loads((tmp_path / "run" / "export" / "best.json").read_text())
    assert side["dataset"] == "synthetic_small" and side["format"] == "octseg-export"
    assert side["normalisation"]["std"] > 0 and "max |logit" in proc.stdout
    card = (tmp_path / "run" / "export" / "best.MODEL_CARD.md").read_text()
    assert "not for clinical use" in card.lower() and "synthetic_small" in card
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "export.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode != 0 and "ckpt_path" in proc.stderr
    assert hydra  # the script is a Hydra entry point like train.py
