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


def default_monitor(kind: str) -> tuple[str, str]:
    """What a task of this kind is judged by: ``(metric, mode)``, e.g. ``("val/acc", "max")``."""
    cls = TASKS.get(kind)
    return (cls.monitor, cls.mode) if cls is not None else ("val/loss", "min")


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
    "default_monitor",
    "TASKS",
    "LanguageModel",
    "SequenceClassifier",
    "SequenceRegressor",
    "SequenceTask",
    "build_task",
]
