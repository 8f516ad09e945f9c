"""A language model's generated text in TensorBoard's text tab at each validation."""

from __future__ import annotations

import lightning as L

from rnnlab.review import tensorboard_writer


class TextSample(L.Callback):
    """Writes ``length`` characters sampled at ``temperature`` after ``prompt`` (language models only)."""

    def __init__(
        self, length: int = 300, temperature: float = 0.8, prompt: str = "\n", seed: int = 0
    ) -> None:
        if length < 1 or temperature < 0:
            raise ValueError("length must be >= 1 and temperature >= 0")
        self.length, self.temperature, self.prompt, self.seed = length, temperature, prompt, seed

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        writer = tensorboard_writer(trainer)
        if writer is None or getattr(datamodule, "dims", None) is None:
            return
        if datamodule.dims.task != "lm":
            return
        from rnnlab.tasks.lm import generate_text

        text = generate_text(
            pl_module.net, datamodule.vocab, self.prompt, self.length, self.temperature, self.seed
        )
        # TensorBoard renders Markdown: indent to keep line breaks and spacing
        shown = "\n".join("    " + line for line in (self.prompt + text).splitlines())
        writer.add_text(
            "val/sample", f"temperature {self.temperature}:\n\n{shown}", trainer.global_step
        )
