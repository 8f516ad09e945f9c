"""Classification metrics from one (true, predicted) count matrix per stage.

One cheap update a step (an ``index_add_`` into a C x C matrix, no host sync) gives accuracy,
macro F1 and balanced accuracy at the epoch's end, where torchmetrics' separate metrics would run
three updates of a few hundred microseconds each, a measurable share of a small net's step.
The definitions match torchmetrics' ``MulticlassAccuracy(average="micro")``,
``MulticlassF1Score(average="macro")`` and ``MulticlassRecall(average="macro")``: a class that
appears in neither the targets nor the predictions is left out of the macro averages.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ClassCounts(Metric):
    """Counts ``[true, predicted]`` over an epoch; ``compute()`` returns a dict of metrics.

    Keys: ``acc`` always; ``f1_macro`` and ``balanced_acc`` with ``per_class=True``; and
    ``confusion``, the count matrix itself (reduced across processes like the rest).
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, num_classes: int, ignore_index: int = -100, per_class: bool = True):
        super().__init__()
        self.num_classes, self.ignore_index, self.per_class = num_classes, ignore_index, per_class
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.add_state("counts", default=zeros, dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """``logits`` (n, classes), ``target`` (n,); targets equal to ``ignore_index`` are skipped."""
        keep = target != self.ignore_index
        cell = torch.where(keep, target * self.num_classes + logits.argmax(-1), 0)
        self.counts.view(-1).index_add_(0, cell, keep.long())

    def compute(self) -> dict[str, torch.Tensor]:
        return class_count_metrics(self.counts, self.per_class)


def class_count_metrics(counts: torch.Tensor, per_class: bool = True) -> dict[str, torch.Tensor]:
    """Accuracy (and macro F1, balanced accuracy) of a ``[true, predicted]`` count matrix."""
    counts = counts.double()
    tp = counts.diagonal()
    total = counts.sum()
    out = {"acc": (tp.sum() / total.clamp(min=1)).float()}
    if per_class:
        support, predicted = counts.sum(1), counts.sum(0)
        fp, fn = predicted - tp, support - tp
        seen = (tp + fp + fn) > 0  # classes in neither targets nor predictions are left out
        n_seen = seen.sum().clamp(min=1)
        recall = torch.where(support > 0, tp / support.clamp(min=1), 0.0)
        f1 = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), 0.0)
        out["f1_macro"] = ((f1 * seen).sum() / n_seen).float()
        out["balanced_acc"] = ((recall * seen).sum() / n_seen).float()
    out["confusion"] = counts.long()
    return out
