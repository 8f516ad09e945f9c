"""The run guard: a run that can be stopped (SIGTERM, Ctrl-C, a NaN loss) and resumed exactly.

``RunGuard`` is added to every run by ``rnnlab.train``; ``stopped`` turns an early stop into the
one sentence (why, at which step, what was saved, the command that resumes) and its exit code.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rnnlab.callbacks.checkpoint import LastCheckpoint
from rnnlab.checkpoints import AtomicCheckpointIO, remove_stale_temporaries
from rnnlab.config_checks import integer, require
from rnnlab.data.resumable import epoch_seed
from rnnlab.errors import EXIT_CODES, NonFiniteLoss, RnnlabError, RunStopped, SkippedTooMany

log = logging.getLogger("rnnlab")


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _distributed(trainer: L.Trainer) -> bool:
    """Whether ``trainer`` runs several processes that share a process group."""
    return (
        trainer.world_size > 1
        and torch.distributed.is_available()
        and torch.distributed.is_initialized()
    )


class RunGuard(L.Callback):
    """Makes a run stoppable and resumable without losing work.

    - Seeds the global RNG from ``(seed, epoch)`` at every epoch start, and stores the RNG state in
      every checkpoint for a resume part-way through an epoch: a resumed run draws the same dropout
      masks as an uninterrupted one.
    - The first Ctrl-C asks for the same graceful stop as SIGTERM (Lightning's own flag, checked
      after each batch); a second Ctrl-C stops at once. Under DDP the processes agree after each
      step whether any of them was asked to stop, so all stop after the same step.
    - On that stop, saves ``last.ckpt`` (atomically, through the trainer's checkpoint IO).
    - Under ``nan_policy=skip``, stops the run after ``nan_skip_limit`` skipped batches in a row.
    - When a run starts, removes the unfinished checkpoint files a killed write left.
    """

    def __init__(
        self, seed: int, checkpoint_dir: str | Path, nan_skip_limit: int | None = None
    ) -> None:
        require("nan_skip_limit", nan_skip_limit, integer(1, null=True), RnnlabError)
        self.seed = int(seed)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.nan_skip_limit = nan_skip_limit
        self.skipped_in_a_row = 0
        self._skipped_before = 0
        self.stop_signal: str | None = None
        self.saved_path: Path | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._previous: dict[int, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            remove_stale_temporaries(self.checkpoint_dir)

    # --- RNG: a function of (seed, epoch), or restored mid-epoch
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending_rng = None
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch))
        random.seed(epoch_seed(self.seed, trainer.current_epoch))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng)
            self._pending_rng = None
        self._skipped_before = getattr(pl_module, "skipped_batches", 0)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["rnnlab_rng"] = _rng_state()
        checkpoint["rnnlab_skipped"] = {
            "total": int(getattr(pl_module, "skipped_batches", 0)),
            "in_a_row": self.skipped_in_a_row,
        }
        if _distributed(trainer):  # every process saves together: keep each one's state
            states: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, checkpoint["rnnlab_rng"])
            checkpoint["rnnlab_rng_ranks"] = states

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._pending_rng = checkpoint.get("rnnlab_rng")
        skipped = checkpoint.get("rnnlab_skipped") or {}
        if hasattr(pl_module, "skipped_batches"):
            pl_module.skipped_batches = int(skipped.get("total", 0))
        self.skipped_in_a_row = int(skipped.get("in_a_row", 0))
        ranks = checkpoint.get("rnnlab_rng_ranks") or []
        if len(ranks) == trainer.world_size > 1:
            self._pending_rng = ranks[trainer.global_rank]

    # --- graceful stop: a signal is noted at once and acted on at a clean point
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_signal = None
        self._trainer = trainer
        if threading.current_thread() is threading.main_thread():
            self._previous = {
                sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
            }

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self.stop_signal == "SIGINT":
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            if getattr(rank_zero_only, "rank", 0) == 0:  # DDP workers get it too: say it once
                print(
                    "\nStopping after this batch and saving a checkpoint "
                    "(Ctrl-C again to stop at once).",
                    file=sys.stderr,
                )
        self.stop_signal = self.stop_signal or signal.Signals(signum).name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if getattr(pl_module, "skipped_batches", 0) > self._skipped_before:  # nan_policy=skip
            self.skipped_in_a_row += 1
            if self.nan_skip_limit and self.skipped_in_a_row >= self.nan_skip_limit:
                step = trainer.global_step - 1  # the skipped batch's own step, as logged
                raise SkippedTooMany(self.nan_skip_limit, step, trainer.current_epoch)
        else:
            self.skipped_in_a_row = 0
        # at the last batch of an epoch, wait for the epoch's end and its checkpoint
        if (
            self._agreed_stop(trainer)
            and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        ):
            self._stop_now(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._agreed_stop(trainer):
            self._stop_now(trainer)

    def _agreed_stop(self, trainer: L.Trainer) -> bool:
        """Whether any process was asked to stop: the same answer, at the same step, on every one.

        Under DDP a signal may reach one process only (a launcher's SIGTERM to rank 0); one
        all-reduce per step tells the others, so every process stops and saves together.
        """
        code = signal.Signals[self.stop_signal].value if self.stop_signal else 0
        if _distributed(trainer):
            flag = torch.tensor([code], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            code = int(flag.item())
            if code and not self.stop_signal:
                self.stop_signal = signal.Signals(code).name
        return bool(code)

    def _stop_now(self, trainer: L.Trainer) -> None:
        """Raise Lightning's own stop flag: it stops at its next check.

        One process calls Lightning's handler (and those it wraps); under DDP every process has
        just agreed to stop, so each raises the flag itself, with no signal forwarded and no
        collective that the others would not join.
        """
        lightning_handler = getattr(self, "_previous", {}).get(signal.SIGTERM)
        if callable(lightning_handler) and not _distributed(trainer):
            lightning_handler(signal.SIGTERM, None)
        else:
            trainer._signal_connector.received_sigterm = True

    def _restore_signals(self) -> None:
        for sig, handler in getattr(self, "_previous", {}).items():
            if handler is not None and threading.current_thread() is threading.main_thread():
                signal.signal(sig, handler)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_signals()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception) -> None:
        self._restore_signals()
        if isinstance(exception, SIGTERMException):
            self.stop_signal = self.stop_signal or "SIGTERM"
            io = getattr(trainer.strategy, "checkpoint_io", None)
            io = io if isinstance(io, AtomicCheckpointIO) else None
            if io is not None:
                io.wait(raise_error=False)  # an earlier write's failure: logged, not raised here
            try:
                self.saved_path = self._save_for_resume(trainer)
                if io is not None:
                    io.wait()  # on disk before the stop message names it
            except Exception as e:  # the stop goes on; name only a checkpoint that is on disk
                log.error("The checkpoint of the stop could not be written: %s", e)
                last = last_good_checkpoint(trainer)
                self.saved_path = Path(last) if last else None

    def _save_for_resume(self, trainer: L.Trainer) -> Path:
        for callback in trainer.callbacks:
            if isinstance(callback, LastCheckpoint):
                callback.save(trainer)  # a no-op where the epoch's end just wrote it
                return Path(callback.last_model_path)
        path = self.checkpoint_dir / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        return path


def stop_message(
    reason: str, trainer: L.Trainer, saved: Path | None, ckpt_hint: str | None = None
) -> str:
    """One sentence: why the run stopped, what was saved and the command that resumes it."""
    where = f"at step {trainer.global_step} (epoch {trainer.current_epoch})"
    if saved is None:
        return f"{reason} {where}; no checkpoint was saved"
    return f"{reason} {where}; saved {saved} and metrics.json; resume with: {resume_command(saved)}"


def resume_command(ckpt: Path) -> str:
    """``python train.py <this run's overrides> ckpt_path=<ckpt>``."""
    overrides: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = [
            o
            for o in HydraConfig.get().overrides.task
            if not o.startswith(("ckpt_path=", "resume="))
        ]
    except ValueError:  # not run through Hydra's entry point
        pass
    return " ".join(["python train.py", *overrides, f"ckpt_path={ckpt}"])


def last_good_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest checkpoint this run wrote, if any."""
    callbacks = trainer.checkpoint_callbacks
    paths = [getattr(c, "last_model_path", "") for c in callbacks]
    paths += [getattr(c, "best_model_path", "") for c in callbacks]
    return next((p for p in paths if p and Path(p).is_file()), None)


# how a fit can end early on purpose: a signal (Lightning's SIGTERMException) or a NaN/inf loss
STOPS = (SIGTERMException, NonFiniteLoss)


def stopped(e: BaseException, trainer: L.Trainer, guard: RunGuard) -> RunStopped:
    """The one-sentence error for an early stop: why, at which step, and how to go on."""
    if isinstance(e, NonFiniteLoss):
        last = last_good_checkpoint(trainer)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before"
        hint = (
            "" if isinstance(e, SkippedTooMany) else " (nan_policy=skip skips such batches instead)"
        )
        return RunStopped(f"{e}; {where}{hint}", EXIT_CODES["non_finite_loss"])
    name = guard.stop_signal or "SIGTERM"
    reason = "stopped by Ctrl-C" if name == "SIGINT" else f"stopped by {name}"
    return RunStopped(stop_message(reason, trainer, guard.saved_path), EXIT_CODES[name])
