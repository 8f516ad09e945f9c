"""Sequence regression: a value at the last step, or at every step (forecasting)."""

from __future__ import annotations

import torch
from torchmetrics import MeanSquaredError, Metric

from rnnlab.tasks.base import SequenceTask, valid_steps_mask


class SequenceRegressor(SequenceTask):
    """Mean squared error over valid steps; logs ``{stage}/mse`` and ``val/mse_best``."""

    monitor = "val/mse"
    mode = "min"

    def __init__(self, net, **kwargs) -> None:
        super().__init__(net, **kwargs)
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_mse", MeanSquaredError())

    @staticmethod
    def valid_outputs(output: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs and targets of the valid steps (padding dropped)."""
        y = batch["y"]
        if output.dim() == 3:
            mask = valid_steps_mask(batch, output.shape[1])
            if mask is not None:
                output, y = output[mask], y[mask]
        return output, y

    def loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor:
        """The training objective on one batch; touches no metric."""
        return torch.nn.functional.mse_loss(*self.valid_outputs(output, batch))

    def loss_and_update(self, stage: str, output: torch.Tensor, batch: dict) -> torch.Tensor:
        output, y = self.valid_outputs(output, batch)
        loss = torch.nn.functional.mse_loss(output, y)
        getattr(self, f"{stage}_mse").update(output.detach(), y)
        return loss

    def stage_metrics(self, stage: str) -> dict[str, Metric]:
        return {"mse": getattr(self, f"{stage}_mse")}
