"""Checkpoint files: atomic writes, safe loading, whether a checkpoint fits a run, what to resume.

Every checkpoint is written to a temporary file in its folder and renamed into place, so a kill
during a write leaves the previous one intact (the trainer's writes go to disk on a thread of their
own, see ``AtomicCheckpointIO``); every load is ``weights_only``, so a checkpoint can
not run code; a checkpoint of another model or data shape is refused with the keys that differ.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import DiskFull, RnnlabError, no_space

log = logging.getLogger("rnnlab")


def _atomic_write(path: Path, write: Callable[[BinaryIO], Any], mode: int | None = None) -> None:
    """Write ``path`` through a same-folder temporary file: ``write(f)``, flush, fsync, rename.

    The temporary file is ``.<name>.<random>.tmp`` (what a killed write leaves; see
    ``remove_stale_temporaries``), removed when anything fails, so the previous file stays.
    ``mode`` defaults to ``0o666`` less the umask.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode() if mode is None else mode)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a same-folder temporary file and ``os.replace``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes | memoryview, path: Path, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a same-folder temporary file and ``os.replace``."""
    _atomic_write(path, lambda f: f.write(data), mode)


def atomic_link(source: Path, path: Path, mode: int | None = None) -> None:
    """Make ``path`` a second name of the finished file ``source``, atomically (``os.replace``);
    where the file system has no hard links, a copy, flushed to disk, goes in its place."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"  # what a killed run leaves
    try:
        try:
            os.link(source, tmp)
        except OSError:
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.chmod(tmp, _file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_mode() -> int:
    """``0o666`` less the umask: the permissions of a file made the usual way."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # os.umask sets the mask to read it, for the whole process: call it from one thread only
    # (AtomicCheckpointIO works the mode out on the training thread, not on its writer)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files that a kill during a checkpoint write left in ``folder``.

    Checkpoints are written to ``.<name>.<random>.tmp`` and renamed into place, so such a file is
    never read; one still there when a run starts belongs to a run that was killed mid-write.
    """
    stale = sorted(folder.glob(".*.ckpt.*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("Removed %d unfinished checkpoint file(s) from %s", len(stale), folder)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place.

    A kill during a write leaves the previous file intact. Loading defaults to ``weights_only``, so
    a checkpoint can not run code.

    With ``background=True`` (the default) a checkpoint is serialised on the calling thread, a
    snapshot that training may change right after, and one writer thread writes, flushes and
    renames it while training goes on. A new write first waits for the one before it, so at most
    one serialised copy waits in memory. Links and removals go through the same thread, in order,
    after the writes they follow; once one of these fails, the rest queued behind it is dropped.
    A failure is raised by the next save, ``wait()``, ``load_checkpoint`` or ``teardown()`` (at the
    end of every fit and test), as ``DiskFull`` for want of space. ``background=False`` writes on
    the calling thread, ``torch.save`` straight into the file (no copy in memory, for checkpoints
    too large to hold twice).

    Between ``hold(last)`` and the save of ``last`` (``LastCheckpoint`` calls it around the
    validation at an epoch's end, when no optimizer step comes between), other checkpoints are
    held instead of written; when ``last`` is written, each held path becomes a hard link to it,
    since both hold the same weights and optimizer state. So ``best.ckpt`` and ``last.ckpt`` of
    the same epoch cost one write. ``release()`` writes whatever is still held.
    """

    def __init__(self, background: bool = True) -> None:
        super().__init__()
        self.background = background
        self._last: Path | None = None
        self._held: dict[Path, dict[str, Any]] = {}
        self._writer: ThreadPoolExecutor | None = None  # made at the first write, shut in teardown
        self._queued: Future | None = None  # the newest task given to the writer
        self._error: BaseException | None = None  # the writer's failure, not raised yet
        # the files' permissions, read here on the training thread: reading the umask sets it for
        # a moment, which must not happen while the writer thread makes a folder
        self._mode = _file_mode()

    def __getstate__(self) -> dict[str, Any]:
        # a copy (pickled for spawned processes) gets a writer of its own when it writes
        return {**self.__dict__, "_writer": None, "_queued": None, "_error": None}

    def hold(self, last: str | Path) -> None:
        """Hold other checkpoints until ``last`` is saved (at the same training step)."""
        self._last = Path(last)

    def release(self, raise_error: bool = True) -> None:
        """Stop holding; write every checkpoint still held, each on its own. With
        ``raise_error=False`` (a run already failing) a failed write is logged, not raised."""
        held, self._held, self._last = self._held, {}, None
        for path, checkpoint in held.items():
            try:
                self._write(checkpoint, path, raise_error)
            except Exception as e:
                if raise_error:
                    raise
                log.error("A checkpoint could not be written: %s", e)

    def discard(self) -> None:
        """Stop holding and write nothing held (after a failed write: the older files stay)."""
        self._held, self._last = {}, None

    def wait(self, raise_error: bool = True) -> None:
        """Block until every queued write, link and removal is on disk; then raise the first that
        failed (``DiskFull`` for want of space), or with ``raise_error=False`` log it instead."""
        if self._queued is not None:
            self._queued.result()  # the writer runs its tasks in order: the newest ends last
            self._queued = None
        error, self._error = self._error, None
        if error is not None:
            if raise_error:
                raise error
            log.error("A checkpoint could not be written: %s", error)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        if self._last is None:
            self._write(checkpoint, path)
        elif path != self._last:
            self._held[path] = checkpoint
        else:
            held, self._held, self._last = self._held, {}, None
            steps = {c.get("global_step") for c in held.values()}
            if steps - {checkpoint.get("global_step")}:  # not the same state after all
                for other, c in held.items():
                    self._write(c, other)
                held = {}
            self._write(checkpoint, path)
            for other in held:
                self._link(path, other)

    def remove_checkpoint(self, path: str | Path) -> None:
        self._held.pop(Path(path), None)
        if self.background:  # after the writes queued before it
            self._queue(super().remove_checkpoint, path, path=Path(path))
        else:
            super().remove_checkpoint(path)

    def teardown(self) -> None:
        # Lightning tears down inside its ``except`` when a fit or test fails: that error goes on,
        # and a failed write is logged rather than raised on top of it (the queue is written first)
        failing = sys.exc_info()[1] is not None
        try:
            if failing:
                self.wait(raise_error=False)
            self.release(raise_error=not failing)
            self.wait(raise_error=not failing)
        finally:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.shutdown(wait=True)

    def _write(self, checkpoint: dict[str, Any], path: Path, raise_error: bool = True) -> None:
        if self.background:
            # one write at a time (one serialised copy in memory); the one before's failure first
            self.wait(raise_error)
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)  # a snapshot: training changes the tensors next
            self._queue(atomic_write_bytes, buffer.getbuffer(), path, self._mode, path=path)
            return
        try:
            atomic_torch_save(checkpoint, path)
        except Exception as e:
            if no_space(e):  # the temporary file is gone; the previous checkpoint untouched
                raise DiskFull(path) from e
            raise

    def _link(self, source: Path, path: Path) -> None:
        if self.background:
            self._queue(atomic_link, source, path, self._mode, path=path)
            return
        try:
            atomic_link(source, path)
        except Exception as e:
            if no_space(e):
                raise DiskFull(path) from e
            raise

    def _queue(self, task: Callable[..., Any], *args: Any, path: Path) -> None:
        """Give ``task(*args)`` to the writer thread, after what is queued already."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-io")
        self._queued = self._writer.submit(self._run, task, args, path)

    def _run(self, task: Callable[..., Any], args: tuple, path: Path) -> None:
        """On the writer thread: ``task(*args)``, kept as ``_error`` if it fails. After a failure
        the queue is skipped until ``wait()`` raises it: what follows depends on what failed
        (best.ckpt's link on last.ckpt's write, a removal of an older best on the new one)."""
        if self._error is not None:
            return
        try:
            task(*args)
        except BaseException as e:  # noqa: BLE001 - kept, and raised on the training thread
            # the error is kept until raised: not the serialised checkpoint its frames still hold
            del args
            traceback.clear_frames(e.__traceback__.tb_next)
            if no_space(e):  # the temporary file is gone; the previous checkpoint untouched
                full = DiskFull(path)
                full.__cause__ = e
                e = full
            self._error = e

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        self.wait()  # a checkpoint still queued is read whole, or its failure raised
        map_location = map_location or (lambda storage, loc: storage)
        weights_only = True if weights_only is None else weights_only
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


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
        target = f"{group}._target_"
        # another class: its other keys differ as a matter of course
        if a.get(target) != b.get(target):
            a, b = {target: a.get(target, "<unset>")}, {target: b.get(target, "<unset>")}
        for key in sorted(set(a) | set(b)):
            leaf = key.rsplit(".", 1)[-1]
            if group == "model" and leaf not in _SHAPE_KEYS:
                continue
            if group == "data" and leaf in _DATA_RUN_KEYS:
                continue
            if a.get(key, "<unset>") != b.get(key, "<unset>"):
                old.append(f"{key}={_short(a.get(key, '<unset>'))}")
                new.append(f"{key}={_short(b.get(key, '<unset>'))}")
    if len(old) > _MAX_KEYS:  # the first few name the problem
        more = f"and {len(old) - _MAX_KEYS} more"
        old, new = [*old[:_MAX_KEYS], more], [*new[:_MAX_KEYS], more]
    return ", ".join(old), ", ".join(new)


_MAX_KEYS = 6  # differing keys named in a mismatch sentence


def _short(value: Any, limit: int = 60) -> str:
    """A value as text, a long one (a path) cut to its end."""
    text = str(value)
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


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
