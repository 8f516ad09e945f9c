"""Sequence classification: one label per sequence, or one per step (copy-memory, taggers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from rnnlab.tasks.base import SequenceTask, valid_steps_mask
from rnnlab.tasks.metrics import ClassCounts

IGNORE = -100


class SequenceClassifier(SequenceTask):
    """Cross-entropy over ``num_classes``; logs ``{stage}/acc`` and the best-so-far ``val/acc_best``.

    With ``per_class_metrics`` (on by default when the data names its classes) it also logs the
    macro F1 ``{stage}/f1_macro`` and the balanced accuracy ``{stage}/balanced_acc`` (mean recall
    per class). All come from one count matrix per stage (``ClassCounts``); the validation matrix
    is kept in ``epoch_tensors["val/confusion"]`` for the callbacks.
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
        self.class_names = list(class_names) if class_names else None
        self.per_class_metrics = (
            bool(class_names) if per_class_metrics is None else bool(per_class_metrics)
        )
        for stage in ("train", "val", "test"):
            counts = ClassCounts(num_classes, ignore_index=IGNORE, per_class=self.per_class_metrics)
            setattr(self, f"{stage}_counts", counts)

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
        getattr(self, f"{stage}_counts").update(logits.detach(), y)
        return loss

    def stage_metrics(self, stage: str) -> dict[str, Metric]:
        # one count matrix gives acc (and f1_macro, balanced_acc); its matrix is kept, not logged
        return {"": getattr(self, f"{stage}_counts")}
