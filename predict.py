"""Segment new scans with a trained checkpoint (or a fold ensemble): label maps, overlays,
surfaces, thickness maps and ETDRS sector means.

    python predict.py ckpt_path=RUN/checkpoints/best.ckpt input=scans/ [output_dir=out/]
    python predict.py ckpt_path=RUN/checkpoints/best.ckpt input=patient.vol tta=flip
    python predict.py 'ckpt_path=[fold0.ckpt,fold1.ckpt]' input=bscan.png save_probabilities=true

Inputs: PNG/JPEG/TIFF/NPY B-scans, multi-page TIFF or 3-D NPY volumes, Heidelberg .vol/.e2e,
HEYEX XML exports and Topcon .fda files (conf/predict.yaml lists every setting; the output
layout is in octseg/evaluation/predict_command.py).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from octseg.evaluation.predict_command import predict_command
from octseg.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    predict_command(cfg)


if __name__ == "__main__":
    main()
