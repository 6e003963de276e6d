"""Export a trained checkpoint's network to ONNX, TorchScript or torch.export (``.pt2``).

    python scripts/export.py ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt
    python scripts/export.py ckpt_path=... 'formats=[onnx,pt2]' out_dir=exported

The files take ``[B, C, H, W]`` images of any size (>= the network's size divisor; padding is
inside the graph) normalised as in training, and return logits ``[B, K, H, W]``. Each is checked
against PyTorch on odd sizes before it is kept; ``<name>.json`` beside them records the classes,
spacing, intensity normalisation and the check, and ``<name>.MODEL_CARD.md`` describes the model
(method, data, test metrics with confidence intervals, intended use). See src/octseg/export.py.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from octseg.evaluation.checkpoint import run_dir_of
from octseg.evaluation.ensemble import load_trained_modules
from octseg.evaluation.model_card import write_model_card
from octseg.export import export_metadata, export_module, format_export_summary
from octseg.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    if not cfg.get("ckpt_path"):
        raise ValueError(
            "scripts/export.py needs ckpt_path=<run>/checkpoints/best.ckpt (a checkpoint "
            "written by train.py)."
        )
    ckpt_path = Path(cfg.ckpt_path)
    # The network is rebuilt exactly as trained: none of the export settings reach its config.
    trained = load_trained_modules([ckpt_path])[0]
    module, run_cfg, ckpt = trained.module, trained.run_cfg, trained.ckpt
    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else run_dir_of(ckpt_path, ckpt) / "export"
    stem = out_dir / (cfg.get("name") or ckpt_path.stem)
    result = export_module(
        module,
        stem,
        in_channels=int(run_cfg.dataset.in_channels),
        example_hw=tuple(cfg.example_hw),
        formats=list(cfg.formats),
        static_hw=tuple(cfg.static_hw) if cfg.get("static_hw") else None,
        opset=int(cfg.opset),
        atol=float(cfg.atol),
        metadata=export_metadata(run_cfg, ckpt_path),
    )
    card = write_model_card(ckpt_path, out=stem.with_name(f"{stem.name}.MODEL_CARD.md"))
    print(format_export_summary(result))
    print(f"model card: {card}")


if __name__ == "__main__":
    main()
