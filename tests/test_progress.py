"""The throttled progress bar updates only when due, and always on each loop's last batch."""

from __future__ import annotations

import io
import re

import lightning as L
import pytest
import torch

from rnnlab.callbacks.progress import (
    EpochLines,
    EpochLog,
    ThrottledRichProgressBar,
    progress_bar,
    shown_metrics,
)


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


def bare_trainer(bar, epochs: int) -> L.Trainer:
    """A CPU trainer with nothing but ``bar``: no logger, checkpoints or model summary."""
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
    )


def fit_with(bar: CountingBar, epochs: int = 2, batches: int = 25) -> None:
    data = torch.utils.data.DataLoader(torch.randn(batches, 2), batch_size=1)
    bare_trainer(bar, epochs).fit(Tiny(), data)


def test_a_slow_update_rate_updates_once_per_epoch_on_the_last_batch():
    bar = CountingBar(updates_per_second=1e-6)  # the first batch of a run, then only last ones
    fit_with(bar, epochs=2, batches=25)
    assert [c for _, c in bar.updates] == [1, 25, 25]


def test_a_fast_update_rate_updates_every_batch():
    bar = CountingBar(updates_per_second=1e9)
    fit_with(bar, epochs=1, batches=25)
    assert [c for _, c in bar.updates] == list(range(1, 26))


class TinyWithEval(Tiny):
    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch).pow(2).mean())

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self.layer(batch).pow(2).mean())


def test_a_disabled_bar_reads_no_loop_state_in_any_loop():
    """Lightning disables the bar on every process but rank zero; each loop must still run."""
    bar = CountingBar(updates_per_second=1e-6)
    bar.disable()
    data = torch.utils.data.DataLoader(torch.randn(6, 2), batch_size=2)
    trainer = bare_trainer(bar, epochs=1)
    trainer.fit(TinyWithEval(), data, data)  # the sanity check, training and validation
    trainer.test(TinyWithEval(), data)
    assert bar.updates == [] and trainer.global_step == 3


class LoggingTiny(TinyWithEval):
    """Logs what rnnlab's tasks log: a step loss, the epoch loss, a validation metric and its best."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train/loss_step", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_end(self):
        self.log("train/loss_epoch", 0.25)

    def on_validation_epoch_end(self):
        self.log_dict({"val/mse": 0.125, "val/mse_best": 0.0625, "val/other": 9.0}, prog_bar=True)


def epoch_line(epoch: int, last: int) -> str:
    """The line of ``LoggingTiny``'s epoch ``epoch`` (of 0..``last``, 3 steps each), as a regex."""
    return (
        rf"Epoch {epoch}/{last}  step {3 * (epoch + 1)}  loss: 0\.25  val/mse: 0\.125  "
        r"best: 0\.0625  \d+\.\d s"
    )


def test_off_a_terminal_each_epoch_is_one_plain_line_with_its_losses():
    out = io.StringIO()
    bar = EpochLines(monitor="val/mse", file=out)
    data = torch.utils.data.DataLoader(torch.randn(6, 2), batch_size=2)
    bare_trainer(bar, epochs=3).fit(LoggingTiny(), data, data)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    for epoch, line in enumerate(lines):
        assert re.fullmatch(epoch_line(epoch, 2), line), line


def test_the_epoch_lines_reach_the_log_files_and_not_the_console(tmp_path):
    import logging

    root = logging.getLogger()
    to_file = logging.FileHandler(tmp_path / "train.log")
    to_file.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    console = io.StringIO()
    to_console = logging.StreamHandler(console)
    root.addHandler(to_file)
    root.addHandler(to_console)
    try:
        data = torch.utils.data.DataLoader(torch.randn(6, 2), batch_size=2)
        bare_trainer(EpochLog(monitor="val/mse"), epochs=2).fit(LoggingTiny(), data, data)
    finally:
        root.removeHandler(to_file)
        root.removeHandler(to_console)
        to_file.close()
    lines = [line for line in (tmp_path / "train.log").read_text().splitlines() if "Epoch" in line]
    assert len(lines) == 2, lines
    for epoch, line in enumerate(lines):
        assert re.fullmatch(r"\[rnnlab\]\[INFO\] - " + epoch_line(epoch, 1), line), line
    assert "Epoch" not in console.getvalue() and "GPU available" in console.getvalue()


def test_progress_bar_picks_the_rich_bar_only_for_a_terminal(monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    monkeypatch.setenv("TTY_INTERACTIVE", "0")
    assert isinstance(progress_bar(monitor="val/acc"), EpochLines)  # pytest captures stdout
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert isinstance(progress_bar(monitor="val/acc"), ThrottledRichProgressBar)


@pytest.mark.parametrize("monitor", ["val/mse", "val/balanced_acc"])
@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_the_rich_bar_fits_one_line_of_the_terminal(width, monitor):
    """The widest line the bar can draw: a 2-digit epoch, 4-digit batches, long numbers."""
    from rich.console import Console
    from rich.progress import Progress, TextColumn

    screen = io.StringIO()
    bar = ThrottledRichProgressBar(monitor=monitor)
    bar._console = Console(file=screen, width=width, force_terminal=True)
    logged = {"train/loss_step": 1.23456e-5, monitor: 1.23456e-5, f"{monitor}_best": 1.23456e-5}
    # as Lightning's metrics column writes them: "name: value", the theme's format, spaces
    text = " ".join(f"{k}: {v:.4g}" for k, v in shown_metrics(logged, monitor).items())
    progress = Progress(*bar.configure_columns(None), TextColumn(text), console=bar._console)
    progress.add_task("Epoch 10/19", total=1234, completed=1233)
    bar._console.print(progress.make_tasks_table(progress.tasks))
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()).splitlines()
    assert len(lines) == 1, lines  # nothing wrapped
    line = lines[0].rstrip()
    assert len(line) <= width and line.startswith("Epoch 10/19 ━")
    assert line.endswith(f"loss: 1.235e-05 {monitor}: 1.235e-05 best: 1.235e-05")
    assert ("1233/1234" in line) == (width >= 100 or monitor == "val/mse")
    assert ("•" in line) == (width >= 120) and ("it/s" in line) == (width >= 200)
