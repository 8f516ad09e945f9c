"""Sequence regression: a value at the last step, or at every step (forecasting)."""

from __future__ import annotations

import torch
from torchmetrics import MeanSquaredError, MinMetric

from rnnlab.tasks.base import SequenceTask, valid_steps_mask


class SequenceRegressor(SequenceTask):
    """Mean squared error over valid steps; logs ``{stage}/mse`` and ``val/mse_best``."""

    monitor = "val/mse"
    mode = "min"

    def __init__(self, net, **kwargs) -> None:
        super().__init__(net, **kwargs)
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_mse", MeanSquaredError())
        self.val_mse_best = MinMetric()

    def loss_and_update(self, stage: str, output: torch.Tensor, batch: dict) -> torch.Tensor:
        y = batch["y"]
        if output.dim() == 3:
            mask = valid_steps_mask(batch, output.shape[1])
            if mask is not None:
                output, y = output[mask], y[mask]
        loss = torch.nn.functional.mse_loss(output, y)
        mse = getattr(self, f"{stage}_mse")
        mse(output.detach(), y)
        self.log(f"{stage}/mse", mse, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_mse_best(self.val_mse.compute())
        self.log("val/mse_best", self.val_mse_best.compute(), prog_bar=True, sync_dist=True)
