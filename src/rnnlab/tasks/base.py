"""The LightningModule every task shares: the net it wraps, optimizers from config, stage metrics."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn


class SequenceTask(L.LightningModule):
    """Wraps any net ``net(x, lengths) -> output``; owns the loss, metrics and optimizers.

    Subclasses set ``monitor``/``mode`` (the metric checkpoints, early stopping and sweeps follow)
    and implement ``loss_and_update(stage, output, batch)``.
    """

    monitor: str = "val/loss"
    mode: str = "min"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., object] | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
            )
        self.scheduler_interval = scheduler_interval

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, lengths)

    def step(self, stage: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output = self(batch["x"], batch.get("lengths"))
        loss = self.loss_and_update(stage, output, batch)
        batch_size = len(batch["x"])
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=stage != "test",
            batch_size=batch_size,
            sync_dist=stage != "train",
        )
        return loss

    def loss_and_update(self, stage: str, output: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.step("train", batch)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.step("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.step("test", batch)

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self(batch["x"], batch.get("lengths"))

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
