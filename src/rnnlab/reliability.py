"""Nothing lost: atomic checkpoints, resume, a graceful stop on SIGTERM/Ctrl-C, a NaN guard, run info."""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from rnnlab.atomic import atomic_torch_save
from rnnlab.config import ROOT, RnnlabError
from rnnlab.data.resumable import epoch_seed

log = logging.getLogger("rnnlab")

NAN_POLICIES = ("stop", "skip")


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (raised by a task under ``nan_policy=stop``)."""

    def __init__(self, value: float, step: int, epoch: int) -> None:
        super().__init__(f"the training loss became {value} at step {step} (epoch {epoch})")
        self.value, self.step, self.epoch = value, step, epoch


class RunStopped(RnnlabError):
    """Training stopped early on purpose (a signal or a non-finite loss); ``exit_code`` says why."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place.

    A kill during a write leaves the previous file intact. Loading defaults to ``weights_only``, so
    a checkpoint can not run code.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        map_location = map_location or (lambda storage, loc: storage)
        weights_only = True if weights_only is None else weights_only
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


class LastCheckpoint(Checkpoint):
    """Keeps ``<dirpath>/last.ckpt`` the newest state: at every epoch end (after validation) and,
    with ``every_n_train_steps > 0``, every that many training steps.

    (Lightning's own ``save_last`` only refreshes it when the monitored metric improves.)
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 0) -> None:
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int):
            raise ValueError(
                f"every_n_train_steps must be a non-negative integer, got {every_n_train_steps!r}"
            )
        if every_n_train_steps < 0:
            raise ValueError(
                f"every_n_train_steps must be a non-negative integer, got {every_n_train_steps}"
            )
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self.last_model_path = ""
        self.best_model_path = ""  # what train() asks of a trainer's first checkpoint callback
        self.saved_step: int | None = None

    def save(self, trainer: L.Trainer) -> None:
        """Write last.ckpt now (once per global step)."""
        if (
            trainer.sanity_checking
            or trainer.fast_dev_run
            or self.saved_step == trainer.global_step
        ):
            return
        path = self.dirpath / "last.ckpt"
        self.last_model_path = str(path)
        self.saved_step = trainer.global_step
        trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"last_model_path": self.last_model_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_model_path = state_dict.get("last_model_path", "")


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


class RunGuard(L.Callback):
    """Makes a run stoppable and resumable without losing work.

    - Seeds the global RNG from ``(seed, epoch)`` at every epoch start, and stores the RNG state in
      every checkpoint for a resume part-way through an epoch: a resumed run draws the same dropout
      masks as an uninterrupted one.
    - The first Ctrl-C asks for the same graceful stop as SIGTERM (Lightning's own flag, checked
      after each batch); a second Ctrl-C stops at once.
    - On that stop, saves ``last.ckpt`` (atomically, through the trainer's checkpoint IO).
    """

    def __init__(self, seed: int, checkpoint_dir: str | Path) -> None:
        self.seed = int(seed)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.stop_signal: str | None = None
        self.saved_path: Path | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._previous: dict[int, Any] = {}

    # --- RNG: a function of (seed, epoch), or restored mid-epoch
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending_rng = None
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch))
        random.seed(epoch_seed(self.seed, trainer.current_epoch))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng)
            self._pending_rng = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["rnnlab_rng"] = _rng_state()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._pending_rng = checkpoint.get("rnnlab_rng")

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
            print(
                "\nStopping after this batch and saving a checkpoint (Ctrl-C again to stop at once).",
                file=sys.stderr,
            )
        self.stop_signal = self.stop_signal or signal.Signals(signum).name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # at the last batch of an epoch, wait for the epoch's end and its checkpoint
        if self.stop_signal and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._stop_now(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stop_signal:
            self._stop_now(trainer)

    def _stop_now(self, trainer: L.Trainer) -> None:
        """Raise Lightning's own stop flag: it stops at its next check and tells every rank."""
        lightning_handler = getattr(self, "_previous", {}).get(signal.SIGTERM)
        if callable(lightning_handler):
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
            for callback in trainer.callbacks:
                if isinstance(callback, LastCheckpoint):
                    callback.save(trainer)  # a no-op where the epoch's end just wrote it
                    self.saved_path = Path(callback.last_model_path)
                    return
            self.saved_path = self.checkpoint_dir / "last.ckpt"
            trainer.save_checkpoint(self.saved_path, weights_only=False)


def git_info(root: Path = ROOT) -> dict[str, Any]:
    """The commit the code ran from and whether the tree had uncommitted changes (None: no git)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode != 0:
            return {"git_commit": None, "git_dirty": None}
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"git_commit": commit.stdout.strip(), "git_dirty": dirty}


def write_run_info(output_dir: Path, info: dict[str, Any]) -> None:
    """``run_info.json``: the git state, versions and command line of the run."""
    import lightning

    payload = {
        **info,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "lightning": lightning.__version__,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "run_info.json").write_text(json.dumps(payload, indent=2) + "\n")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``ckpt_path``, or with ``resume=true`` the run's last.ckpt."""
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume") and not ckpt_path:
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise RnnlabError(
                f"resume=true but {last} does not exist: point hydra.run.dir at the run to resume"
            )
        ckpt_path = str(last)
    return str(ckpt_path) if ckpt_path else None


# config keys that decide the shapes of a model's weights
_SHAPE_KEYS = ("_target_", "cell", "hidden_size", "num_layers", "bidirectional", "embedding_dim")


# data keys that change how a run reads its data, not the shapes of the model
_DATA_RUN_KEYS = ("batch_size", "num_workers", "n_train", "n_val", "n_test", "seed")


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(_flat(v, f"{prefix}.{k}"))
    return out


def describe_mismatch(stored: dict, current: dict) -> tuple[str, str]:
    """The model and data settings where two configs differ: ``(stored, current)`` as text."""
    old: list[str] = []
    new: list[str] = []
    for group in ("model", "data"):
        a, b = _flat(stored.get(group) or {}, group), _flat(current.get(group) or {}, group)
        for key in sorted(set(a) | set(b)):
            leaf = key.rsplit(".", 1)[-1]
            if group == "model" and leaf not in _SHAPE_KEYS:
                continue
            if group == "data" and leaf in _DATA_RUN_KEYS:
                continue
            if a.get(key, "<unset>") != b.get(key, "<unset>"):
                old.append(f"{key}={a.get(key, '<unset>')}")
                new.append(f"{key}={b.get(key, '<unset>')}")
    return ", ".join(old), ", ".join(new)


def check_weights_fit(
    ckpt_path: str | Path, checkpoint: dict, module: torch.nn.Module, cfg: DictConfig | dict
) -> None:
    """Raise a sentence naming what differs when a checkpoint's weights do not fit ``module``."""
    state = checkpoint.get("state_dict") or {}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or unexpected or reshaped):
        return
    stored = (checkpoint.get("rnnlab") or {}).get("config") or {}
    current = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    old, new = describe_mismatch(stored, current)
    if old:
        raise RnnlabError(
            f"checkpoint {ckpt_path} was trained with {old}; this run has {new}, "
            "so its weights do not fit"
        )
    if reshaped:
        k = reshaped[0]
        detail = f"{k} has shape {tuple(state[k].shape)} there and {tuple(own[k].shape)} here"
    else:
        detail = f"parameter {(missing or unexpected)[0]} is in one model but not the other"
    raise RnnlabError(
        f"checkpoint {ckpt_path} holds weights of another model or data shape ({detail})"
    )


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
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "non_finite_loss": 3}


def status_of(stopped_by: BaseException | None) -> str:
    """How a run ended, for metrics.json: completed, interrupted or non_finite_loss."""
    if stopped_by is None:
        return "completed"
    return "non_finite_loss" if isinstance(stopped_by, NonFiniteLoss) else "interrupted"


def stopped(e: BaseException, trainer: L.Trainer, guard: RunGuard) -> RunStopped:
    """The one-sentence error for an early stop: why, at which step, and how to go on."""
    if isinstance(e, NonFiniteLoss):
        last = last_good_checkpoint(trainer)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before"
        return RunStopped(
            f"{e}; {where} (nan_policy=skip skips such batches instead)",
            EXIT_CODES["non_finite_loss"],
        )
    name = guard.stop_signal or "SIGTERM"
    reason = "stopped by Ctrl-C" if name == "SIGINT" else f"stopped by {name}"
    return RunStopped(stop_message(reason, trainer, guard.saved_path), EXIT_CODES[name])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an rnnlab checkpoint as plain data (``weights_only``: it cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise RnnlabError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a checkpoint we can read"
        raise RnnlabError(f"{path} is not a readable checkpoint ({type(e).__name__})") from e
    if (
        not isinstance(checkpoint, dict)
        or "rnnlab" not in checkpoint
        or "state_dict" not in checkpoint
    ):
        raise RnnlabError(f"{path} is not an rnnlab checkpoint (it holds no run config)")
    return checkpoint


def check_resume(ckpt_path: str | None, task: torch.nn.Module, cfg: DictConfig) -> int | None:
    """Check that ``ckpt_path`` loads as plain data and fits this run; return its logged step."""
    if not ckpt_path:
        return None
    checkpoint = load_checkpoint(ckpt_path)
    check_weights_fit(ckpt_path, checkpoint, task, cfg)
    loops = checkpoint.get("loops") or {}
    epoch_loop = (loops.get("fit_loop") or {}).get("epoch_loop.state_dict") or {}
    return int(epoch_loop.get("_batches_that_stepped", checkpoint.get("global_step", 0)))


def continue_event_files(loggers: list, step: int | None) -> None:
    """On resume, hide TensorBoard points at or after ``step`` that a killed run had logged."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if step is None:
        return
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger._kwargs["purge_step"] = step  # passed on to SummaryWriter(purge_step=...)
