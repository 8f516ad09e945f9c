"""Steps to solve: check a solve criterion on held-out data every N training steps, stop when met.

``SolveCheck`` gives a run a budget in training steps and, every ``every_n_steps`` steps (and at
the last one), scores the net on the first ``num_sequences`` validation sequences, in eval mode and
outside the training graph. Regression (adding) is solved when the MSE falls below ``mse_below``;
sequence classification (copy) when at least ``recall_at_least`` of the recalled symbols (the
targets that are not blank, id 0) are right. The first check that passes stops training; the run
then records ``solve/solved`` (1 or 0), ``solve/steps``, ``solve/sequences`` and ``solve/seconds``
(training steps, training sequences and wall seconds since training started, checks included) in
``metrics.json`` and TensorBoard, with ``solve/budget_steps`` and the last checked ``solve/value``.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from rnnlab.config_checks import integer, number, require


def solve_value(task_kind: str, output: torch.Tensor, y: torch.Tensor) -> float:
    """The criterion's value: MSE for regression, the share of recalled symbols right otherwise."""
    if task_kind == "regression":
        return float(torch.mean((output.reshape(y.shape).float() - y.float()) ** 2))
    recalled = y != 0  # (batch, seq): blanks (id 0) are not recalled symbols
    right = (output.argmax(-1) == y) & recalled
    return float(right.sum()) / max(int(recalled.sum()), 1)


class SolveCheck(L.Callback):
    """Stops a run when the held-out criterion is met, or at ``budget_steps``; records when."""

    # columns of TensorBoard's HParams tab beside hparams/best and hparams/test (build_trainer)
    hparams_metrics = ("solve/solved", "solve/steps", "solve/sequences", "solve/seconds")

    def __init__(
        self,
        budget_steps: int,
        every_n_steps: int = 25,
        num_sequences: int = 256,
        mse_below: float = 0.01,
        recall_at_least: float = 0.99,
    ) -> None:
        self.budget_steps = require("callbacks.solve.budget_steps", budget_steps, integer(1))
        self.every_n_steps = require("callbacks.solve.every_n_steps", every_n_steps, integer(1))
        self.num_sequences = require("callbacks.solve.num_sequences", num_sequences, integer(1))
        self.mse_below = require("callbacks.solve.mse_below", mse_below, number(0, low_open=True))
        self.recall_at_least = require(
            "callbacks.solve.recall_at_least", recall_at_least, number(0, 1, low_open=True)
        )
        self.sequences = 0
        self.solved_at: dict[str, float] | None = None
        self.last_value: float | None = None
        self.start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.fit_loop.epoch_loop.max_steps = self.budget_steps  # the budget is the step limit
        self.start = time.perf_counter()

    def solved(self, value: float, task_kind: str) -> bool:
        if task_kind == "regression":
            return value < self.mse_below
        return value >= self.recall_at_least

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        """The criterion on the first ``num_sequences`` validation sequences."""
        tensors = trainer.datamodule.splits["val"].tensors
        batch = {k: v[: self.num_sequences].to(pl_module.device) for k, v in tensors.items()}
        size = trainer.datamodule.per_device_batch_size()
        was_training = pl_module.training
        pl_module.eval()
        outputs = []
        with torch.no_grad():
            for i in range(0, len(batch["x"]), size):
                lengths = batch["lengths"][i : i + size] if "lengths" in batch else None
                outputs.append(pl_module(batch["x"][i : i + size], lengths))
        pl_module.train(was_training)
        return solve_value(trainer.datamodule.dims.task, torch.cat(outputs), batch["y"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.sequences += len(batch["x"]) * trainer.world_size
        step = trainer.global_step
        if self.solved_at is not None or (step % self.every_n_steps and step < self.budget_steps):
            return
        self.last_value = self.check(trainer, pl_module)
        self._log(trainer, {"solve/value": self.last_value}, step)
        if self.solved(self.last_value, trainer.datamodule.dims.task):
            self.solved_at = {
                "solve/steps": float(step),
                "solve/sequences": float(self.sequences),
                "solve/seconds": round(time.perf_counter() - self.start, 3),
            }
            trainer.should_stop = True

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception) -> None:
        self.on_train_end(trainer, pl_module)  # a run stopped by a NaN loss still says how far

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {
            "solve/solved": float(self.solved_at is not None),
            "solve/budget_steps": float(self.budget_steps),
            **(self.solved_at or {}),
        }
        if self.last_value is not None:
            record["solve/value"] = self.last_value
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in record.items()})
        self._log(trainer, record, trainer.global_step)

    @staticmethod
    def _log(trainer: L.Trainer, metrics: dict[str, float], step: int) -> None:
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step)
