"""What a classification run shows in TensorBoard: the confusion matrix and sample predictions.

Both only act on data sets that name their classes (names by language), so generated tasks pay
nothing for them.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from rnnlab.review import tensorboard_writer

# stops of matplotlib's "Blues" colormap at shares 0, 0.5 and 1
_BLUES = ((247, 251, 255), (107, 174, 214), (8, 48, 107))


def _shade(share: float) -> tuple[int, int, int]:
    """White through mid blue to dark blue as ``share`` goes from 0 to 1."""
    share = min(max(share, 0.0), 1.0)
    lo, hi, t = (
        (_BLUES[0], _BLUES[1], share * 2) if share < 0.5 else (_BLUES[1], _BLUES[2], share * 2 - 1)
    )
    return tuple(round(a + (b - a) * t) for a, b in zip(lo, hi, strict=True))


CONFUSION_TAG = "confusion_matrix/val"  # sorts before grad_flow/ and hidden/ in the Images tab
CARD_WIDTH = 340  # pixels: TensorBoard's image cards show wider pictures scaled down to this


def confusion_image(
    matrix: torch.Tensor, class_names: list[str], width: int = CARD_WIDTH
) -> np.ndarray:
    """An (H, W, 3) uint8 picture of a (true, predicted) count matrix, at most ``width`` wide
    where the classes allow, so TensorBoard shows it at its own size: each cell is shaded by its
    share of the true class (the row's recall) and shows that share in percent where it fits.
    True classes down the left, predictions along the top (their names drawn upwards).

    Drawn with Pillow, a few milliseconds for 18 classes (a matplotlib figure takes half a second,
    which is a noticeable share of a names epoch).
    """
    from PIL import Image, ImageDraw, ImageFont

    counts = matrix.float().cpu()
    recall = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(class_names)
    font = ImageFont.load_default(size=11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text: str, f=font) -> tuple[int, int]:
        left, top, right, bottom = probe.textbbox((0, 0), text, font=f)
        return int(right - left), int(bottom - top)

    label = max((size(c)[0] for c in class_names), default=0) + 6
    pad, line = 6, 14
    cell = int(min(40, max(12, (width - 2 * pad - label) // max(n, 1))))
    small = ImageFont.load_default(size=max(8, min(12, cell // 2)))
    left, top = pad + label, pad + 2 * line + label + 4
    caption = ("validation: % of each true class (rows)", "predicted as each class (columns)")
    full = max(left + n * cell + pad, 2 * pad + max(size(c)[0] for c in caption))
    image = Image.new("RGB", (full, top + n * cell + pad), "white")
    draw = ImageDraw.Draw(image)
    for k, text in enumerate(caption):
        draw.text((pad, pad + k * line), text, "black", font)
    for i, name in enumerate(class_names):
        draw.text((left - 4, top + i * cell + cell / 2), name, "black", font, anchor="rm")
        strip = Image.new("RGB", (label, cell), "white")  # column names, drawn upwards
        ImageDraw.Draw(strip).text((2, cell / 2), name, "black", font, anchor="lm")
        image.paste(strip.rotate(90, expand=True), (left + i * cell, top - label - 2))
    for i in range(n):
        for j in range(n):
            share = float(recall[i, j])
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_shade(share))
            if counts[i, j] > 0:
                text = f"{round(100 * share)}"
                if size(text, small)[0] <= cell - 2:
                    color = "white" if share > 0.5 else "black"
                    draw.text((x0 + cell / 2, y0 + cell / 2), text, color, small, anchor="mm")
    draw.rectangle([left - 1, top - 1, left + n * cell, top + n * cell], outline=(160, 160, 160))
    return np.asarray(image)


def per_class_table(matrix: torch.Tensor, class_names: list[str]) -> str:
    """A Markdown table: each true class, its count, its recall and what it is most taken for."""
    counts = matrix.long().cpu()
    rows = ["| class | n | recall | most often taken for |", "|---|---|---|---|"]
    for i, name in enumerate(class_names):
        total = int(counts[i].sum())
        if total == 0:
            continue
        others = counts[i].clone()
        others[i] = -1
        j = int(others.argmax())
        mistaken = f"{class_names[j]} ({int(others[j])})" if others[j] > 0 else "-"
        rows.append(f"| {name} | {total} | {int(counts[i, i]) / total:.2f} | {mistaken} |")
    return "\n".join(rows)


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
            writer.add_image(CONFUSION_TAG, picture, step, dataformats="HWC")
            writer.add_text(CONFUSION_TAG, per_class_table(confusion, class_names), step)
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
