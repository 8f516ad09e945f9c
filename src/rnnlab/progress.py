"""A rich progress bar whose per-batch bookkeeping is throttled to a few updates a second."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's ``RichProgressBar``, updated at most ``updates_per_second`` times a second.

    Lightning's bar advances its task and re-reads every progress-bar metric after each batch,
    which costs about as much as a small recurrent net's whole step. The screen is redrawn
    ``refresh_rate`` times a second either way, so updating more often than that shows nothing
    new. The last batch of each loop always updates, so the bar ends full.
    """

    def __init__(self, *args: Any, updates_per_second: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not updates_per_second > 0:
            raise ValueError(f"updates_per_second must be positive, got {updates_per_second!r}")
        self.update_interval = 1.0 / updates_per_second
        self._last_update: dict[str, float] = {}

    def _due(self, loop: str, batch_idx: int, total: float) -> bool:
        """Whether ``loop``'s bar should update after batch ``batch_idx`` (of ``total``)."""
        now = time.monotonic()
        if batch_idx + 1 < total and now - self._last_update.get(loop, -1e9) < self.update_interval:
            return False
        self._last_update[loop] = now
        return True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._due("train", batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._due("val", batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(
                trainer, pl_module, outputs, batch, batch_idx, dataloader_idx
            )

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._due("test", batch_idx, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
