"""LightningModules, one per kind of learning problem; each wraps any net."""

from __future__ import annotations

from rnnlab.tasks.base import SequenceTask
from rnnlab.tasks.classification import SequenceClassifier
from rnnlab.tasks.lm import LanguageModel
from rnnlab.tasks.regression import SequenceRegressor

TASKS: dict[str, type[SequenceTask]] = {
    "classification": SequenceClassifier,
    "regression": SequenceRegressor,
    "lm": LanguageModel,
}


def build_task(dims, net, **kwargs) -> SequenceTask:
    """The task that fits the data's ``dims.task``, wrapping ``net``."""
    if dims.task not in TASKS:
        raise ValueError(f"no task for data of kind {dims.task!r}; known: {sorted(TASKS)}")
    cls = TASKS[dims.task]
    if dims.task in ("classification", "lm"):
        kwargs["num_classes"] = dims.output_size
    if dims.task == "classification" and dims.class_names:
        kwargs.setdefault("class_names", list(dims.class_names))
    if dims.task == "classification" and dims.class_weights:
        kwargs.setdefault("class_weights", list(dims.class_weights))
    return cls(net, **kwargs)


__all__ = [
    "TASKS",
    "LanguageModel",
    "SequenceClassifier",
    "SequenceRegressor",
    "SequenceTask",
    "build_task",
]
