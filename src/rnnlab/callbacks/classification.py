"""What a classification run shows in TensorBoard: the confusion matrix and sample predictions.

Both only act on data sets that name their classes (names by language), so generated tasks pay
nothing for them.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger


def tensorboard_writer(trainer: L.Trainer):
    """The SummaryWriter of the run's TensorBoard logger, or None."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


# stops of matplotlib's "Blues" colormap at shares 0, 0.5 and 1
_BLUES = ((247, 251, 255), (107, 174, 214), (8, 48, 107))


def _shade(share: float) -> tuple[int, int, int]:
    """White through mid blue to dark blue as ``share`` goes from 0 to 1."""
    share = min(max(share, 0.0), 1.0)
    lo, hi, t = (
        (_BLUES[0], _BLUES[1], share * 2) if share < 0.5 else (_BLUES[1], _BLUES[2], share * 2 - 1)
    )
    return tuple(round(a + (b - a) * t) for a, b in zip(lo, hi, strict=True))


def confusion_image(matrix: torch.Tensor, class_names: list[str], cell: int = 34) -> np.ndarray:
    """An (H, W, 3) uint8 picture of a (true, predicted) count matrix: each cell shows its count,
    shaded by its share of the true class (the row's recall); true classes down the left,
    predictions along the top.

    Drawn with Pillow, a few milliseconds for 18 classes (a matplotlib figure takes half a second,
    which is a noticeable share of a names epoch).
    """
    from PIL import Image, ImageDraw, ImageFont

    counts = matrix.float().cpu()
    recall = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(class_names)
    font = ImageFont.load_default(size=12)
    small = ImageFont.load_default(size=10 if cell < 40 else 12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str, f=font) -> int:
        left, _, right, _ = probe.textbbox((0, 0), text, font=f)
        return int(right - left)

    label = max((width(c) for c in class_names), default=0) + 10
    pad, caption = 8, 18
    left, top = pad + caption + label, pad + caption * 2 + label
    size = (left + n * cell + pad, top + n * cell + pad)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), "validation: counts, shaded by share of the true class", "black", font)
    grid_mid_x = left + n * cell / 2
    draw.text((grid_mid_x, pad + caption + 2), "predicted", "black", font, anchor="mt")
    for i, name in enumerate(class_names):
        y = top + i * cell + cell / 2
        draw.text((left - 6, y), name, "black", font, anchor="rm")
        # column labels: drawn sideways on a strip, then pasted above their column
        strip = Image.new("RGB", (label, cell), "white")
        ImageDraw.Draw(strip).text((4, cell / 2), name, "black", font, anchor="lm")
        image.paste(strip.rotate(90, expand=True), (left + i * cell, top - label))
    side = Image.new("RGB", (n * cell, caption), "white")
    ImageDraw.Draw(side).text((n * cell / 2, caption / 2), "true", "black", font, anchor="mm")
    image.paste(side.rotate(90, expand=True), (pad, top))
    for i in range(n):
        for j in range(n):
            share = float(recall[i, j])
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_shade(share))
            if counts[i, j] > 0:
                color = "white" if share > 0.5 else "black"
                center = (x0 + cell / 2, y0 + cell / 2)
                draw.text(center, str(int(counts[i, j])), color, small, anchor="mm")
    draw.rectangle([left - 1, top - 1, left + n * cell, top + n * cell], outline=(160, 160, 160))
    return np.asarray(image)


class ClassificationReport(L.Callback):
    """At each validation: the confusion matrix (images tab) and ``samples`` predictions (text tab)."""

    def __init__(self, samples: int = 8, every_n_epochs: int = 1) -> None:
        if samples < 0 or every_n_epochs < 1:
            raise ValueError("samples must be >= 0 and every_n_epochs >= 1")
        self.samples = samples
        self.every_n_epochs = every_n_epochs

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the module's epoch end: its metrics (and the confusion matrix, reduced over every
        # process) are computed by then, so only process 0 has work left here
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        class_names = getattr(pl_module, "class_names", None)
        writer = tensorboard_writer(trainer)
        if not class_names or writer is None:
            return
        step = trainer.global_step
        confusion = getattr(pl_module, "epoch_tensors", {}).get("val/confusion")
        if confusion is not None:
            picture = confusion_image(confusion, class_names)
            writer.add_image("val/confusion_matrix", picture, step, dataformats="HWC")
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
