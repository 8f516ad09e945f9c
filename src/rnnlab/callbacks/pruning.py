"""Optuna pruning inside a trial's own training process.

The Optuna sweeper (``hydra/sweeper=rnnlab_optuna``) gives each trial the overrides
``optuna.study_name``, ``optuna.storage`` and ``optuna.trial``. The callback here reports the
monitored metric to that trial after every validation and stops the run with ``optuna.TrialPruned``
when the study's pruner says so; the sweeper then records the trial as PRUNED.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

PRUNER_ATTR = "rnnlab_pruner"  # written into the study by the sweeper


class OptunaPruning(L.Callback):
    """Reports ``monitor`` to an Optuna trial each validation (step = epoch) and prunes it."""

    def __init__(self, study_name: str, storage: str, trial_number: int, monitor: str) -> None:
        import optuna
        from hydra.utils import instantiate

        self.monitor = monitor
        storage_obj = optuna.storages.get_storage(storage)
        study_id = storage_obj.get_study_id_from_name(study_name)
        spec = storage_obj.get_study_user_attrs(study_id).get(PRUNER_ATTR)
        pruner = instantiate(spec) if spec else optuna.pruners.NopPruner()
        study = optuna.load_study(
            study_name=study_name,
            storage=storage_obj,
            sampler=optuna.samplers.RandomSampler(),
            pruner=pruner,
        )
        trial_id = storage_obj.get_trial_id_from_study_id_trial_number(study_id, trial_number)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.trial_number = trial_number

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        import optuna

        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            shown = f"{value:.6g}" if math.isfinite(value) else str(value)
            raise optuna.TrialPruned(
                f"trial {self.trial_number} pruned after epoch {epoch + 1}: {self.monitor}={shown}"
            )


def trial_callbacks(cfg: DictConfig) -> list[Any]:
    """The pruning callback when this run is an Optuna trial, else nothing."""
    node = cfg.get("optuna")
    if not node or node.get("trial") is None:
        return []
    trial = OmegaConf.to_container(node, resolve=True)
    return [
        OptunaPruning(
            study_name=str(trial["study_name"]),
            storage=str(trial["storage"]),
            trial_number=int(trial["trial"]),
            monitor=cfg.monitor.metric,
        )
    ]
