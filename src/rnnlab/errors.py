"""What can go wrong in a run, as exceptions with exit codes; imports neither torch nor Lightning.

- ``RnnlabError``: a problem with the user's input or the run's files, one sentence, exit 2 unless
  it carries its own ``exit_code``.
- ``RunStopped``: a run stopped early on purpose (a signal, a non-finite loss), with its exit code.
- ``NonFiniteLoss``, ``SkippedTooMany``: a NaN or infinite training loss.
- ``DiskFull``: a checkpoint could not be written for want of space.
"""

from __future__ import annotations

import errno
from pathlib import Path


class RnnlabError(Exception):
    """A problem with the user's input, reported as one sentence with a non-zero exit (2, or the
    error's own ``exit_code``)."""


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (raised by a task under ``nan_policy=stop``)."""

    def __init__(self, value: float, step: int, epoch: int) -> None:
        super().__init__(f"the training loss became {value} at step {step} (epoch {epoch})")
        self.value, self.step, self.epoch = value, step, epoch


class SkippedTooMany(NonFiniteLoss):
    """``nan_policy=skip`` met a non-finite loss on ``limit`` batches in a row: it will not recover."""

    def __init__(self, limit: int, step: int, epoch: int) -> None:
        RuntimeError.__init__(
            self,
            f"the training loss was NaN or infinite on {limit} batches in a row, the last at step "
            f"{step} (epoch {epoch}), and nan_policy=skip skipped them all (nan_skip_limit={limit})",
        )
        self.value, self.step, self.epoch = float("nan"), step, epoch


class DiskFull(RnnlabError):
    """A checkpoint could not be written for want of space; the older ones were left as they were."""

    exit_code = 1

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"the disk is full: {path.name} could not be written to {path.parent}, where the older "
            "checkpoints are intact; free some space and resume with resume=true"
        )


def no_space(error: BaseException | None) -> bool:
    """Whether ``error`` or what it arose from is ENOSPC (torch reports it as a RuntimeError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


class RunStopped(RnnlabError):
    """Training stopped early on purpose (a signal or a non-finite loss); ``exit_code`` says why."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# how a run stopped early on purpose -> its exit code (SIGINT and SIGTERM as a shell reports them)
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "non_finite_loss": 3}


def status_of(stopped_by: BaseException | None) -> str:
    """How a run ended, for metrics.json: completed, interrupted or non_finite_loss."""
    if stopped_by is None:
        return "completed"
    return "non_finite_loss" if isinstance(stopped_by, NonFiniteLoss) else "interrupted"
