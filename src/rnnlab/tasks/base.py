"""The LightningModule every task shares: the net it wraps, optimizers from config, stage metrics."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, Metric, MinMetric

STAGES = ("train", "val", "test")


class SequenceTask(L.LightningModule):
    """Wraps any net ``net(x, lengths) -> output``; owns the loss, metrics and optimizers.

    Subclasses set ``monitor``/``mode`` (the metric checkpoints, early stopping and sweeps follow),
    implement ``loss_and_update(stage, output, batch)`` (return the loss, update the stage's
    metrics) and ``stage_metrics(stage)`` (the metrics logged as ``{stage}/{name}``).

    Metrics are updated every step but logged once per epoch, and the training loss reaches the
    progress bar and the loggers only on the steps the trainer writes logs
    (``trainer.log_every_n_steps``): each ``self.log`` call costs a fraction of a millisecond,
    which is a large share of a small recurrent net's step.
    """

    monitor: str = "val/loss"
    mode: str = "min"
    skipped_batches: int = 0

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., object] | None = None,
        scheduler_interval: str = "epoch",
        nan_policy: str = "stop",
    ) -> None:
        super().__init__()
        self.net = net
        if nan_policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy must be stop or skip, got {nan_policy!r}")
        self.nan_policy = nan_policy
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
            )
        self.scheduler_interval = scheduler_interval
        self.epoch_tensors: dict[str, torch.Tensor] = {}  # e.g. "val/confusion", see log_stage
        self._step_losses: dict[str, list[tuple[torch.Tensor, int]]] = {}  # (loss, batch size)
        for stage in STAGES:
            setattr(self, f"{stage}_loss", MeanMetric())
        self.set_monitor(self.monitor, self.mode)

    def set_monitor(self, metric: str, mode: str) -> None:
        """Follow ``metric`` (``min`` or ``max``): its best-so-far value is logged as ``{metric}_best``."""
        self.monitor, self.mode = metric, mode
        self.val_best = MaxMetric() if mode == "max" else MinMetric()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, lengths)

    def loss_and_update(self, stage: str, output: torch.Tensor, batch: dict) -> torch.Tensor:
        """The loss of a batch; also updates the stage's metrics."""
        raise NotImplementedError

    def stage_metrics(self, stage: str) -> dict[str, Metric]:
        """The metrics of a stage besides the loss, by name (``acc`` -> ``{stage}/acc``)."""
        return {}

    def step(self, stage: str, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        output = self(batch["x"], batch.get("lengths"))
        loss = self.loss_and_update(stage, output, batch)
        if stage == "train" and not torch.isfinite(loss):
            return self.non_finite_loss(loss)
        # the loss metric is updated once an epoch from these (see stage_loss): a torchmetrics
        # update costs about 0.1 ms, an append nothing
        self._step_losses.setdefault(stage, []).append((loss.detach(), len(batch["x"])))
        if stage == "train" and self.trainer._logger_connector.should_update_logs:
            # sync_dist: the mean over every process, the value one process would log
            self.log(
                "train/loss_step",
                loss.detach(),
                prog_bar=True,
                on_step=True,
                on_epoch=False,
                sync_dist=True,
            )
        return loss

    def non_finite_loss(self, loss: torch.Tensor) -> None:
        """A NaN/inf training loss: stop (``nan_policy=stop``) or skip the batch and count it."""
        from rnnlab.errors import NonFiniteLoss

        if self.nan_policy != "skip":
            raise NonFiniteLoss(loss.item(), self.global_step, self.current_epoch)
        self.skipped_batches += 1
        rank_zero_warn(
            f"skipped a batch with a {loss.item()} loss at step {self.global_step} "
            f"({self.skipped_batches} so far)"
        )
        # per epoch: how many batches were skipped
        self.log("train/skipped_batches", 1.0, on_step=False, on_epoch=True, reduce_fx="sum")
        return None  # Lightning skips backward and the optimizer step

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        return self.step("train", batch)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.step("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.step("test", batch)

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self(batch["x"], batch.get("lengths"))

    def log_stage(self, stage: str) -> dict[str, torch.Tensor]:
        """Log the stage's epoch metrics (see ``compute_stage``); returns them."""
        computed = self.compute_stage(stage)
        # already reduced, so equal on every process: sync_dist only tells Lightning so
        self.log_dict(computed, prog_bar=stage == "val", sync_dist=True)
        return computed

    def compute_stage(self, stage: str) -> dict[str, torch.Tensor]:
        """The stage's epoch metrics (reduced across processes by torchmetrics); resets them.

        A metric whose ``compute()`` returns a dict adds one value per key; values that are not
        scalars (a confusion matrix) are kept in ``epoch_tensors`` for callbacks, not logged.
        """
        loss_name = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        values = {loss_name: self.stage_loss(stage)}
        values.update(
            {f"{stage}/{k}" if k else stage: m for k, m in self.stage_metrics(stage).items()}
        )
        computed = {}
        for name in [k for k in self.epoch_tensors if k.startswith(f"{stage}/")]:
            del self.epoch_tensors[name]  # last epoch's
        for name, metric in values.items():
            if metric.update_count == 0:  # e.g. a stage limited to zero batches
                continue
            value = metric.compute()
            metric.reset()
            for key, v in value.items() if isinstance(value, dict) else [("", value)]:
                full = f"{name}/{key}" if key else name
                if v.numel() == 1:
                    computed[full] = v
                else:
                    self.epoch_tensors[full] = v.detach().cpu()
        return computed

    def stage_loss(self, stage: str) -> MeanMetric:
        """The stage's loss metric, updated with the steps' losses (weighted by batch size) since
        its last update: one vectorised update, the same mean as one update a step."""
        metric = getattr(self, f"{stage}_loss")
        steps = self._step_losses.pop(stage, [])
        if steps:
            losses = torch.stack([loss for loss, _ in steps]).float()
            weights = torch.tensor([n for _, n in steps], dtype=losses.dtype, device=losses.device)
            metric.update(losses, weights)
        return metric

    def on_train_epoch_end(self) -> None:
        self.log_stage("train")

    def on_validation_epoch_end(self) -> None:
        computed = self.compute_stage("val")
        if not self.trainer.sanity_checking and self.monitor in computed:
            self.val_best(computed[self.monitor])
            computed[f"{self.monitor}_best"] = self.val_best.compute()
        # one log_dict call (each Lightning log call costs a fraction of a millisecond); the
        # values are already reduced, so equal on every process: sync_dist only tells Lightning
        self.log_dict(computed, prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.log_stage("test")

    def configure_optimizers(self):
        factory = self.optimizer_factory or (lambda params: torch.optim.Adam(params, lr=1e-3))
        optimizer = factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.monitor,
                "interval": self.scheduler_interval,
            },
        }


def valid_steps_mask(batch: dict, seq_len: int) -> torch.Tensor | None:
    """(batch, seq) boolean mask of valid steps, or None when every step is valid."""
    lengths = batch.get("lengths")
    if lengths is None:
        return None
    steps = torch.arange(seq_len, device=lengths.device)
    return steps[None, :] < lengths[:, None]
