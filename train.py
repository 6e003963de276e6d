"""Train, validate and test a model:  python train.py model=ynet dataset=duke

Everything is composed from conf/ by Hydra (see README.md for the config groups); the work is
done by :func:`octseg.training.train`. ``python train.py ckpt_path=RUN/checkpoints/last.ckpt``
resumes that run with its own overrides, in its own folder.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from octseg.training import resume_argv, train
from octseg.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric") or "")
    if HydraConfig.get().mode.name == "MULTIRUN":
        import logging

        logging.getLogger("octseg.train").info("%s = %s", cfg.optimized_metric, value)
    return value


if __name__ == "__main__":
    try:
        sys.argv = [sys.argv[0], *resume_argv(sys.argv[1:])]
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"train.py: {err}")
    main()
