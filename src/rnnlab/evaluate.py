"""Rebuild a run from its checkpoint alone and score it: ``evaluate(ckpt_path, overrides) -> metrics``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from rnnlab.checkpoints import check_weights_fit, load_checkpoint
from rnnlab.errors import RnnlabError
from rnnlab.train import build_components, metric_value, quiet_lightning_logging

log = logging.getLogger("rnnlab")


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Apply ``key=value`` overrides to a stored config; unknown keys are an error."""
    for item in overrides:
        if "=" not in item:
            raise RnnlabError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise RnnlabError(f"unknown config key {key!r} in override {item!r}")
        with open_dict(cfg):
            OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"x={value}"]).x, merge=False)
    return cfg


def restore(ckpt_path: str | Path, overrides: list[str] = ()):
    """The config, datamodule and task of a checkpoint, weights loaded."""
    checkpoint = load_checkpoint(ckpt_path)
    cfg = apply_overrides(OmegaConf.create(checkpoint["rnnlab"]["config"]), list(overrides))
    datamodule, dims, net, task = _components_with_state(cfg, checkpoint)
    check_weights_fit(ckpt_path, checkpoint, task, cfg)
    try:
        task.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise RnnlabError(
            f"checkpoint {ckpt_path} does not fit its model: {first[1].strip() if len(first) > 1 else first[0]}"
        ) from e
    task.eval()
    return cfg, datamodule, task


def _components_with_state(cfg: DictConfig, checkpoint: dict):
    from hydra.utils import get_class

    datamodule_cls = get_class(cfg.data._target_)
    state = checkpoint.get(datamodule_cls.__qualname__)
    datamodule, dims, net, task = build_components(cfg, datamodule_state=state)
    return datamodule, dims, net, task


def evaluate(
    ckpt_path: str | Path, overrides: list[str] = (), accelerator: str = "auto"
) -> dict[str, float]:
    """Test a checkpoint on its test split (or on data given by overrides); return the metrics."""
    quiet_lightning_logging()
    cfg, datamodule, task = restore(ckpt_path, overrides)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    results = trainer.test(task, datamodule=datamodule, verbose=False)
    metrics = {k: metric_value(v) for r in results for k, v in r.items()}
    return dict(sorted(metrics.items()))


def write_json(path: str | Path, payload: dict) -> None:
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
