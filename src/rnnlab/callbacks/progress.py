"""Progress output: a one-line rich bar on a terminal, one plain line an epoch anywhere else."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import (
    BatchesProcessedColumn,
    CustomBarColumn,
    CustomTimeColumn,
    ProcessingSpeedColumn,
    RichProgressBarTheme,
)
from rich.console import Console
from rich.progress import TextColumn


def progress_bar(
    refresh_rate: int = 10, updates_per_second: float = 10.0, monitor: str | None = None
) -> ProgressBar:
    """The progress callback for where the output goes.

    On a terminal, a live rich bar that fits one line (``ThrottledRichProgressBar``); in a pipe,
    a file or a scheduler's log, one plain line per epoch (``EpochLines``), which reads well in
    ``train.log``, ``tee`` and ``nohup.out`` where a live bar's frames would come out as fragments.
    """
    if Console().is_terminal:
        return ThrottledRichProgressBar(
            refresh_rate=refresh_rate, updates_per_second=updates_per_second, monitor=monitor
        )
    return EpochLines(monitor=monitor)


def shown_metrics(metrics: dict[str, Any], monitor: str | None) -> dict[str, float]:
    """The few values a progress line shows: the training loss, the monitored metric, its best."""
    shown: dict[str, float] = {}
    for key in ("train/loss_epoch", "train/loss_step", "train/loss"):
        if key in metrics:
            shown["loss"] = float(metrics[key])
            break
    if monitor is None:  # the task's own: val/acc or val/mse, whichever was logged
        monitor = next((k for k in ("val/acc", "val/mse", "val/loss") if k in metrics), None)
    if monitor is not None and monitor in metrics:
        shown[monitor] = float(metrics[monitor])
        if f"{monitor}_best" in metrics:
            shown["best"] = float(metrics[f"{monitor}_best"])
    return shown


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) and value != 0 else f"{value}"


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's ``RichProgressBar`` on one line, updated at most ``updates_per_second`` a second.

    Lightning's bar advances its task and re-reads every progress-bar metric after each batch,
    which costs about as much as a small recurrent net's whole step. The screen is redrawn
    ``refresh_rate`` times a second either way, so updating more often than that shows nothing
    new. The last batch of each loop always updates, so the bar ends full.

    It shows the training loss, the monitored metric and its best (``loss: 0.0123 val/mse:
    0.0061 best: 0.0058``), and sizes the bar, the clock and the speed to the terminal's width,
    so the whole line fits in 80 columns or more instead of wrapping.
    """

    def __init__(
        self,
        *args: Any,
        updates_per_second: float = 10.0,
        monitor: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("theme", RichProgressBarTheme(metrics_format=".4g"))
        super().__init__(*args, **kwargs)
        if not updates_per_second > 0:
            raise ValueError(f"updates_per_second must be positive, got {updates_per_second!r}")
        self.update_interval = 1.0 / updates_per_second
        self.monitor = monitor
        self._last_update: dict[str, float] = {}

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        return shown_metrics(super().get_metrics(trainer, pl_module), self.monitor)

    def configure_columns(self, trainer) -> list:
        """The description and the metrics always; the bar, the batch counter, the clock and the
        speed as the terminal's width allows, so that the line never wraps."""
        width = self._console.width if self._console is not None else 80
        # the metrics at their widest: "loss: 1.235e-05 <monitor>: 1.235e-05 best: 1.235e-05"
        room = width - 12 - (len(self.monitor or "val/loss") + 43)  # and "Epoch 10/19 "
        extras: list = []
        if room - 10 >= 6:  # "1234/1234 "
            extras.append(BatchesProcessedColumn(style=self.theme.batch_progress))
            room -= 10
        if room - 18 >= 20:  # "0:01:23 • 0:04:56 "
            extras.append(CustomTimeColumn(style=self.theme.time))
            room -= 18
        if room - 11 >= 20:  # "123.45it/s "
            extras.append(ProcessingSpeedColumn(style=self.theme.processing_speed))
            room -= 11
        bar = CustomBarColumn(
            bar_width=max(5, min(40, room - 1)),
            complete_style=self.theme.progress_bar,
            finished_style=self.theme.progress_bar_finished,
            pulse_style=self.theme.progress_bar_pulse,
        )
        return [TextColumn("[progress.description]{task.description}"), bar, *extras]

    def _due(self, loop: str, batch_idx: int, total: float) -> bool:
        """Whether ``loop``'s bar should update after batch ``batch_idx`` (of ``total``).

        Callers ask only when the bar is enabled: Lightning disables it on every process but
        global rank zero, where the loop's totals are not tracked and must not be read.
        """
        now = time.monotonic()
        if batch_idx + 1 < total and now - self._last_update.get(loop, -1e9) < self.update_interval:
            return False
        self._last_update[loop] = now
        return True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.is_disabled:
            return
        if self._due("train", batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.is_disabled:
            return
        if self._due("val", batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(
                trainer, pl_module, outputs, batch, batch_idx, dataloader_idx
            )

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.is_disabled:
            return
        if self._due("test", batch_idx, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)


class _EpochEnds:
    """One line at the end of each epoch (and at each validation inside one), handed to
    ``_emit``: ``Epoch 3/10  step 384  loss: 0.1234  val/acc: 0.8123  best: 0.8200  4.1 s``."""

    def __init__(self, monitor: str | None = None) -> None:
        super().__init__()
        self.monitor = monitor
        self._epoch_start = time.monotonic()
        self._pending: tuple[int, int, float] | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._flush(trainer)
        self._epoch_start = time.monotonic()

    def on_validation_end(self, trainer, pl_module) -> None:
        # a validation inside the epoch (trainer.val_check_interval) gets a line of its own; the
        # one at the epoch's end is printed with the epoch's training loss
        loop = trainer.fit_loop.epoch_loop
        if (
            trainer.sanity_checking
            or trainer.state.fn != "fit"
            or loop.batch_progress.is_last_batch
        ):
            return
        self._line(trainer, trainer.current_epoch, trainer.global_step, self._elapsed())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Lightning calls this before the module's own epoch-end hook logs the epoch's training
        # loss: note the epoch here, print it when the next epoch (or the training) starts/ends
        self._pending = (trainer.current_epoch, trainer.global_step, self._elapsed())

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._flush(trainer)

    def _elapsed(self) -> float:
        return time.monotonic() - self._epoch_start

    def _flush(self, trainer) -> None:
        if self._pending is not None:
            self._line(trainer, *self._pending)
            self._pending = None

    def _line(self, trainer, epoch: int, step: int, seconds: float) -> None:
        epochs = f"/{trainer.max_epochs - 1}" if trainer.max_epochs not in (None, -1) else ""
        parts = [f"Epoch {epoch}{epochs}", f"step {step}"]
        shown = shown_metrics(dict(trainer.callback_metrics), self.monitor)
        parts += [f"{name}: {_number(value)}" for name, value in shown.items()]
        parts.append(f"{seconds:.1f} s")
        self._emit(trainer, "  ".join(parts))

    def _emit(self, trainer, line: str) -> None:
        raise NotImplementedError


class EpochLines(_EpochEnds, ProgressBar):
    """The progress output of a pipe, a file or a job's log: one plain line an epoch (see
    ``_EpochEnds``) on stdout. Nothing is printed per batch, so it costs nothing."""

    def __init__(self, monitor: str | None = None, file: Any = None) -> None:
        super().__init__(monitor)
        self.file = file
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _emit(self, trainer, line: str) -> None:
        if self.is_enabled:
            print(line, file=self.file or sys.stdout, flush=True)


class EpochLog(_EpochEnds, Callback):
    """The same epoch lines in the run's log files (``train.log``), whatever the screen shows (a
    live bar on a terminal, lines in a pipe, nothing with the bar off); from process zero only.

    They go to the file handlers of the root logger (Hydra's ``train.log``), not to the console,
    where the progress output already is.
    """

    def _emit(self, trainer, line: str) -> None:
        if not trainer.is_global_zero:
            return
        handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
        if not handlers:
            return
        record = logging.LogRecord("rnnlab", logging.INFO, __file__, 0, line, None, None)
        for handler in handlers:
            if record.levelno >= handler.level:
                handler.handle(record)
