"""The Hydra entry point of `python train.py`; heavy imports wait until a run starts."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rnnlab.config import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from rnnlab.train import run

    return run(cfg)
