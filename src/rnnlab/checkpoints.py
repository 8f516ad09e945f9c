"""Checkpoint files: atomic writes, safe loading, whether a checkpoint fits a run, what to resume.

Every checkpoint is written to a temporary file in its folder and renamed into place, so a kill
during a write leaves the previous one intact; every load is ``weights_only``, so a checkpoint can
not run code; a checkpoint of another model or data shape is refused with the keys that differ.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import DiskFull, RnnlabError, no_space

log = logging.getLogger("rnnlab")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a same-folder temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; keep the usual permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_link(source: Path, path: Path) -> None:
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
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
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

    Between ``hold(last)`` and the save of ``last`` (``LastCheckpoint`` calls it around the
    validation at an epoch's end, when no optimizer step comes between), other checkpoints are
    held instead of written; when ``last`` is written, each held path becomes a hard link to it,
    since both hold the same weights and optimizer state. So ``best.ckpt`` and ``last.ckpt`` of
    the same epoch cost one write. ``release()`` writes whatever is still held.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last: Path | None = None
        self._held: dict[Path, dict[str, Any]] = {}

    def hold(self, last: str | Path) -> None:
        """Hold other checkpoints until ``last`` is saved (at the same training step)."""
        self._last = Path(last)

    def release(self) -> None:
        """Stop holding; write every checkpoint still held, each on its own."""
        held, self._held, self._last = self._held, {}, None
        for path, checkpoint in held.items():
            self._write(checkpoint, path)

    def discard(self) -> None:
        """Stop holding and write nothing held (after a failed write: the older files stay)."""
        self._held, self._last = {}, None

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
        super().remove_checkpoint(path)

    def teardown(self) -> None:
        self.release()

    def _write(self, checkpoint: dict[str, Any], path: Path) -> None:
        try:
            atomic_torch_save(checkpoint, path)
        except Exception as e:
            if no_space(e):  # the temporary file is gone; the previous checkpoint untouched
                raise DiskFull(path) from e
            raise

    def _link(self, source: Path, path: Path) -> None:
        try:
            atomic_link(source, path)
        except Exception as e:
            if no_space(e):
                raise DiskFull(path) from e
            raise

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
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
