"""Checkpoint callbacks: ``last.ckpt`` at every epoch end, and the run config in every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from rnnlab.config_checks import integer, require


class LastCheckpoint(Checkpoint):
    """Keeps ``<dirpath>/last.ckpt`` the newest state: at every epoch end (after validation) and,
    with ``every_n_train_steps > 0``, every that many training steps.

    (Lightning's own ``save_last`` only refreshes it when the monitored metric improves.)
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 0) -> None:
        require("every_n_train_steps", every_n_train_steps, integer(0))
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self.last_model_path = ""
        self.best_model_path = ""  # what train() asks of a trainer's first checkpoint callback
        self.saved_step: int | None = None

    def save(self, trainer: L.Trainer) -> None:
        """Write last.ckpt now (once per global step)."""
        if (
            trainer.sanity_checking
            or trainer.fast_dev_run
            or self.saved_step == trainer.global_step
        ):
            return
        path = self.dirpath / "last.ckpt"
        self.last_model_path = str(path)
        self.saved_step = trainer.global_step
        trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        n = self.every_n_train_steps
        # an epoch's last step is saved at the epoch's end, after validation: Lightning resumes
        # a checkpoint from between the two in the next epoch, skipping that validation
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if n and trainer.global_step % n == 0 and not last_batch:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"last_model_path": self.last_model_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_model_path = state_dict.get("last_model_path", "")


class ConfigInCheckpoint(L.Callback):
    """Stores the resolved run config in every checkpoint, so eval and predict need nothing else."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["rnnlab"] = {"config": self.config, "version": 1}
