"""What a run leaves behind to read later: ``metrics.json``, ``run_info.json``, the final table."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from rnnlab.config import ROOT
from rnnlab.errors import status_of

log = logging.getLogger("rnnlab")


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


def metric_value(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def current_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The epoch-level metrics the trainer holds now (training steps left out)."""
    return {
        k: metric_value(v)
        for k, v in sorted(trainer.callback_metrics.items())
        if not k.startswith("train/") or k == "train/loss_epoch"
    }


class RunRecord:
    """``metrics.json`` of one run: the metrics, where the run got to, its git state, how it ended.

    Made when the run starts (the clock starts then); ``write`` is called at the end, or at an
    early stop with what stopped it. Only global rank zero writes.
    """

    def __init__(self, output_dir: Path, monitor: str, mode: str | None) -> None:
        self.output_dir = Path(output_dir)
        self.monitor, self.mode = monitor, mode
        self.start = time.time()
        self.git = git_info()

    def write_run_info(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            write_run_info(self.output_dir, self.git)

    def write(
        self,
        trainer: L.Trainer,
        metrics: dict[str, float],
        stopped_by: BaseException | None = None,
    ) -> None:
        record = {
            "metrics": metrics,
            "monitor": self.monitor,
            "mode": self.mode,
            "best_model_path": trainer.checkpoint_callback.best_model_path
            if trainer.checkpoint_callback
            else None,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "duration_s": round(time.time() - self.start, 3),
            "status": status_of(stopped_by),
            # batches skipped for a NaN/inf loss (nan_policy=skip)
            "skipped_batches": int(getattr(trainer.lightning_module, "skipped_batches", 0) or 0),
            **self.git,
        }
        if trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")


def report(output_dir: Path, metrics: dict[str, float], baselines: dict[str, float]) -> None:
    """Print the run directory and the final metrics, each beside the trivial baseline if known."""
    lines = []
    for k, v in metrics.items():
        if k.startswith(("test/", "val/")):
            base = baselines.get(k, baselines.get(k.split("/", 1)[1]))  # per split, else one
            lines.append(
                f"  {k:<22} {v:.4f}" + (f"   (baseline {base:.4f})" if base is not None else "")
            )
    log.info("Run directory: %s\n%s", output_dir, "\n".join(lines))
