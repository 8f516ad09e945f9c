"""ClassCounts: one count matrix per stage gives torchmetrics' accuracy, macro F1 and recall."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

from rnnlab.tasks.metrics import ClassCounts


@pytest.mark.parametrize("seed", range(6))
def test_class_counts_equal_torchmetrics_to_1e6(seed):
    g = torch.Generator().manual_seed(seed)
    classes = 7
    ours = ClassCounts(classes)
    reference = {
        "acc": MulticlassAccuracy(classes, average="micro", ignore_index=-100),
        "f1_macro": MulticlassF1Score(classes, average="macro", ignore_index=-100),
        "balanced_acc": MulticlassRecall(classes, average="macro", ignore_index=-100),
        "confusion": MulticlassConfusionMatrix(classes, ignore_index=-100),
    }
    for _ in range(5):
        n = int(torch.randint(1, 40, (1,), generator=g))
        # skewed labels: class 6 never occurs and some classes are never predicted
        target = torch.randint(0, 5, (n,), generator=g)
        logits = torch.randn(n, classes, generator=g)
        logits[:, 4] -= 5 * (seed % 2)
        target[torch.rand(n, generator=g) < 0.2] = -100  # padded steps are ignored
        ours.update(logits, target)
        for metric in reference.values():
            metric.update(logits, target)
    got = ours.compute()
    for name, metric in reference.items():
        expected = metric.compute()
        if name == "confusion":
            assert torch.equal(got[name], expected.long())
        else:
            assert abs(float(got[name]) - float(expected)) < 1e-6, name


def test_without_per_class_metrics_only_accuracy_and_the_matrix():
    counts = ClassCounts(3, per_class=False)
    counts.update(torch.eye(3)[[0, 1, 2, 2]], torch.tensor([0, 1, 1, 2]))
    got = counts.compute()
    assert set(got) == {"acc", "confusion"} and float(got["acc"]) == 0.75
    assert got["confusion"].tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
