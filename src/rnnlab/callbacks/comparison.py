"""The two scalars every run logs for TensorBoard's HParams table: its best and its test value."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from rnnlab.review import BEST_TAG, TEST_TAG


class ComparisonScalars(L.Callback):
    """Logs ``hparams/best`` after each validation and ``hparams/test`` after testing.

    They are the HParams table's first two columns in every run: the best value of the
    monitored metric so far and the test value of the best checkpoint.
    """

    def __init__(self, monitor: str) -> None:
        self.best_key = f"{monitor}_best"
        self.test_key = monitor.replace("val/", "test/", 1)

    def _write(self, trainer: L.Trainer, tag: str, key: str) -> None:
        value = trainer.callback_metrics.get(key)
        if value is None or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_scalar(tag, float(value), trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, BEST_TAG, self.best_key)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, TEST_TAG, self.test_key)
