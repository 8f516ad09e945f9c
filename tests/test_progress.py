"""The throttled progress bar updates only when due, and always on each loop's last batch."""

from __future__ import annotations

import lightning as L
import torch

from rnnlab.progress import ThrottledRichProgressBar


class CountingBar(ThrottledRichProgressBar):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.updates: list[tuple[str, int]] = []

    def _update(self, progress_bar_id, current: int, visible: bool = True, hard: bool = False):
        if progress_bar_id is not None and progress_bar_id == self.train_progress_bar_id:
            self.updates.append(("train", current))
        super()._update(progress_bar_id, current, visible, hard)


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit_with(bar: CountingBar, epochs: int = 2, batches: int = 25) -> None:
    data = torch.utils.data.DataLoader(torch.randn(batches, 2), batch_size=1)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
    )
    trainer.fit(Tiny(), data)


def test_a_slow_update_rate_updates_once_per_epoch_on_the_last_batch():
    bar = CountingBar(updates_per_second=1e-6)  # the first batch of a run, then only last ones
    fit_with(bar, epochs=2, batches=25)
    assert [c for _, c in bar.updates] == [1, 25, 25]


def test_a_fast_update_rate_updates_every_batch():
    bar = CountingBar(updates_per_second=1e9)
    fit_with(bar, epochs=1, batches=25)
    assert [c for _, c in bar.updates] == list(range(1, 26))
