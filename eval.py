"""Evaluate a checkpoint on a test split, or prediction files made by any tool.

    python eval.py ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt [dataset.split=kfold ...]
    python eval.py 'ckpt_path=[fold0/best.ckpt,fold1/best.ckpt]' tta=flip     # fold ensemble
    python eval.py pred_dir=DIR gt_dir=DIR num_classes=10 'spacing_um=[3.87,11.3]'
    python eval.py pred_dir=DIR dataset=duke paths.data_dir=../shared/datasets

Both modes write metrics.json, per_scan.csv, boundaries.csv and thickness.csv to the run folder
(logs/eval/runs/...; the same code writes train.py's test report) and print a per-class table.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from octseg.evaluation.commands import evaluate_checkpoint, evaluate_folders
from octseg.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    if bool(cfg.get("ckpt_path")) == bool(cfg.get("pred_dir")):
        raise ValueError(
            "eval.py needs exactly one of ckpt_path=<checkpoint> or pred_dir=<folder of label "
            f"maps>; got ckpt_path={cfg.get('ckpt_path')!r}, pred_dir={cfg.get('pred_dir')!r}."
        )
    if cfg.get("ckpt_path"):
        evaluate_checkpoint(cfg)
    else:
        evaluate_folders(cfg)


if __name__ == "__main__":
    main()
