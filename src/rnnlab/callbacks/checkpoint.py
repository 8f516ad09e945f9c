"""Checkpoint callbacks: ``last.ckpt`` at every epoch end, and the run config in every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from rnnlab.checkpoints import AtomicCheckpointIO
from rnnlab.config_checks import integer, require
from rnnlab.errors import DiskFull


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

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the validation at an epoch's end: a checkpoint saved during it (best.ckpt) holds the
        # weights and optimizer state last.ckpt is about to hold, so it is written once, as
        # last.ckpt, and linked (AtomicCheckpointIO.hold)
        io = self._checkpoint_io(trainer)
        if (
            io is not None
            and trainer.state.fn == "fit"
            and not (trainer.sanity_checking or trainer.fast_dev_run)
            and self.saved_step != trainer.global_step
            and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        ):
            io.hold(self.dirpath / "last.ckpt")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        try:
            self.save(trainer)
        finally:
            self._release(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the last epoch's write, on its way on the writer thread (AtomicCheckpointIO), is on
        # disk when fit returns; a failure is raised here, in the fit, where it becomes the
        # run's one sentence
        io = self._checkpoint_io(trainer)
        if io is not None:
            io.wait()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        io = self._checkpoint_io(trainer)
        if io is None:
            return
        # the run already fails with ``exception``: what is queued is written (a stop by a
        # signal says "resume with" last.ckpt), a failed write is logged, not raised on top
        io.wait(raise_error=False)
        if isinstance(exception, DiskFull):
            io.discard()  # the older files stay as they are; the run stops with one sentence
        if trainer.is_global_zero:
            io.release(raise_error=False)
        io.wait(raise_error=False)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        # Lightning's own teardown of the checkpoint IO came before this hook: once more, it
        # writes what is still held, waits for it and shuts the writer thread down
        io = self._checkpoint_io(trainer)
        if io is not None and trainer.is_global_zero:
            io.teardown()

    def _release(self, trainer: L.Trainer) -> None:
        io = self._checkpoint_io(trainer)
        if io is not None and trainer.is_global_zero:
            io.release()

    @staticmethod
    def _checkpoint_io(trainer: L.Trainer) -> AtomicCheckpointIO | None:
        io = getattr(trainer.strategy, "checkpoint_io", None)
        return io if isinstance(io, AtomicCheckpointIO) else None

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
