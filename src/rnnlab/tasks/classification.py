"""Sequence classification: one label per sequence, or one per step (copy-memory, taggers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

from rnnlab.tasks.base import SequenceTask, valid_steps_mask

IGNORE = -100


class SequenceClassifier(SequenceTask):
    """Cross-entropy over ``num_classes``; logs ``{stage}/acc`` and the best-so-far ``val/acc_best``.

    With ``per_class_metrics`` (on by default when the data names its classes) it also logs the
    macro F1 ``{stage}/f1_macro`` and the balanced accuracy ``{stage}/balanced_acc`` (mean recall
    per class), and keeps the validation confusion matrix ``val_confusion`` for the callbacks.
    """

    monitor = "val/acc"
    mode = "max"

    def __init__(
        self,
        net,
        num_classes: int,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        class_names: list[str] | None = None,
        per_class_metrics: bool | None = None,
        **kwargs,
    ) -> None:
        super().__init__(net, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        weights = (
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float)
        )
        if weights is not None and weights.shape != (num_classes,):
            raise ValueError(
                f"class_weights needs {num_classes} values, got {tuple(weights.shape)}"
            )
        self.register_buffer("class_weights", weights, persistent=False)
        for stage in ("train", "val", "test"):
            setattr(
                self,
                f"{stage}_acc",
                MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE),
            )
        self.class_names = list(class_names) if class_names else None
        self.per_class_metrics = (
            bool(class_names) if per_class_metrics is None else bool(per_class_metrics)
        )
        if self.per_class_metrics:
            for stage in ("train", "val", "test"):
                setattr(
                    self,
                    f"{stage}_f1_macro",
                    MulticlassF1Score(num_classes, average="macro", ignore_index=IGNORE),
                )
                setattr(
                    self,
                    f"{stage}_balanced_acc",
                    MulticlassRecall(num_classes, average="macro", ignore_index=IGNORE),
                )
            self.val_confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE)

    def targets_and_logits(
        self, output: torch.Tensor, batch: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flatten per-step outputs, marking padded steps with the ignore index."""
        y = batch["y"]
        if output.dim() == 3:  # (batch, seq, classes): one target per step
            mask = valid_steps_mask(batch, output.shape[1])
            if mask is not None:
                y = y.masked_fill(~mask, IGNORE)
            return output.reshape(-1, output.shape[-1]), y.reshape(-1)
        return output, y

    def loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor:
        """The training objective on one batch; touches no metric."""
        logits, y = self.targets_and_logits(output, batch)
        return F.cross_entropy(
            logits,
            y,
            weight=self.class_weights,
            ignore_index=IGNORE,
            label_smoothing=self.label_smoothing,
        )

    def loss_and_update(self, stage: str, output: torch.Tensor, batch: dict) -> torch.Tensor:
        loss = self.loss(output, batch)
        logits, y = self.targets_and_logits(output, batch)
        for metric in self.stage_metrics(stage).values():
            metric.update(logits.detach(), y)
        if self.per_class_metrics and stage == "val":
            self.val_confusion.update(logits.detach(), y)
        return loss

    def stage_metrics(self, stage: str) -> dict[str, Metric]:
        metrics = {"acc": getattr(self, f"{stage}_acc")}
        if self.per_class_metrics:
            metrics["f1_macro"] = getattr(self, f"{stage}_f1_macro")
            metrics["balanced_acc"] = getattr(self, f"{stage}_balanced_acc")
        return metrics

    def on_validation_epoch_start(self) -> None:
        if self.per_class_metrics:
            self.val_confusion.reset()
