"""What a classification run shows in TensorBoard: the confusion matrix and sample predictions.

Both only act on data sets that name their classes (names by language), so generated tasks pay
nothing for them.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger


def tensorboard_writer(trainer: L.Trainer):
    """The SummaryWriter of the run's TensorBoard logger, or None."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def confusion_figure(matrix: torch.Tensor, class_names: list[str]):
    """A matplotlib figure of a (true, predicted) count matrix, each row normalized to recall."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    counts = matrix.float().cpu()
    recall = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.42 * len(class_names) + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(recall.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in ticks:
        for j in ticks:
            if counts[i, j] > 0:
                color = "white" if recall[i, j] > 0.5 else "black"
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=6, color=color)
    ax.set_title("validation: counts, shaded by share of the true class")
    fig.tight_layout()
    return fig


class ClassificationReport(L.Callback):
    """At each validation: the confusion matrix (images tab) and ``samples`` predictions (text tab)."""

    def __init__(self, samples: int = 8, every_n_epochs: int = 1) -> None:
        if samples < 0 or every_n_epochs < 1:
            raise ValueError("samples must be >= 0 and every_n_epochs >= 1")
        self.samples = samples
        self.every_n_epochs = every_n_epochs

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        class_names = getattr(pl_module, "class_names", None)
        writer = tensorboard_writer(trainer)
        if not class_names or writer is None:
            return
        step = trainer.global_step
        confusion = getattr(pl_module, "val_confusion", None)
        if confusion is not None and confusion.update_count:
            fig = confusion_figure(confusion.compute(), class_names)
            writer.add_figure("val/confusion_matrix", fig, step, close=True)
        text = self.sample_predictions(trainer, pl_module, class_names)
        if text:
            writer.add_text("val/predictions", text, step)

    @torch.no_grad()
    def sample_predictions(
        self, trainer: L.Trainer, pl_module: L.LightningModule, class_names: list[str]
    ) -> str:
        """A Markdown table of a few validation names, their language and the model's guess."""
        datamodule = trainer.datamodule
        split = getattr(datamodule, "splits", {}).get("val")
        if not self.samples or split is None or not hasattr(datamodule, "decode"):
            return ""
        n = len(split)
        indices = torch.linspace(0, n - 1, min(self.samples, n)).long().unique().tolist()
        batch = split.__getitems__(indices)
        was_training = pl_module.training
        pl_module.eval()
        logits = pl_module(batch["x"].to(pl_module.device), batch["lengths"].to(pl_module.device))
        pl_module.train(was_training)
        probs = torch.softmax(logits.float(), -1).cpu()  # (samples, classes)
        rows = ["| name | language | predicted | probability |", "|---|---|---|---|"]
        for i in range(len(indices)):
            name = datamodule.decode(batch["x"][i, : batch["lengths"][i]])
            guess = int(probs[i].argmax())
            mark = "" if guess == int(batch["y"][i]) else " ✗"
            rows.append(
                f"| {name} | {class_names[int(batch['y'][i])]} | {class_names[guess]}{mark} "
                f"| {probs[i, guess]:.3f} |"
            )
        return "\n".join(rows)
