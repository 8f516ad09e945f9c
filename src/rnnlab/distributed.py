"""DDP under Hydra: workers join their job's run directory, and a sweep runs each trial once.

Lightning starts the extra DDP processes of a node by running the script again. Under Hydra its
own launcher replays ``sys.argv``, so the workers of a single run make run directories of their own,
and the workers of a ``-m`` sweep replay the whole sweep. Here each worker restarts only the job
it belongs to: that job's own overrides (one trial's values, never the sweep's lists), in run mode,
inside the job's directory, without a second ``.hydra/``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

log = logging.getLogger("rnnlab")

# what Lightning's launcher writes into the environment of the process that starts the workers
LAUNCH_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "OMP_NUM_THREADS",
)
# Hydra overrides that describe the sweep or the launch, not the job a worker repeats
SWEEP_KEYS = ("hydra.mode", "hydra.run", "hydra.sweep", "hydra.sweeper", "hydra.launcher")
SWEEP_GROUPS = ("hydra/sweeper", "hydra/launcher")
WORKER_TIMEOUT_S = 120.0  # a finished job's workers, still tearing down
WORKER_STOP_TIMEOUT_S = 10.0  # a stopped or failed job's: they stopped with it, or they hang

_workers: list[subprocess.Popen] = []  # the workers this process started, oldest first


def quote_override(value: str) -> str:
    """``value`` as a single-quoted Hydra override value (quotes and interpolations escaped)."""
    escaped = value.replace("'", "\\'").replace("${", "\\${")
    if escaped.endswith("\\"):  # a backslash before the closing quote would escape it
        escaped += "\\"
    return f"'{escaped}'"


def _is_sweep_override(key: str) -> bool:
    return key in SWEEP_GROUPS or any(key == k or key.startswith(k + ".") for k in SWEEP_KEYS)


def worker_command(local_rank: int) -> tuple[list[str], str]:
    """The command that starts DDP worker ``local_rank`` of the running Hydra job, and its cwd."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    import __main__

    hydra_cfg = HydraConfig.get()
    cwd = hydra_cfg.runtime.cwd  # where the command was typed; relative paths mean the same there
    if __main__.__spec__ is None:
        command = [sys.executable, os.path.join(cwd, sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    if hydra_cfg.job.config_name:
        command.append(f"--config-name={hydra_cfg.job.config_name}")
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line":
            command.append(f"--config-dir={source.path}")
    parsed = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.hydra))
    job_hydra_overrides = [o.input_line for o in parsed if not _is_sweep_override(o.key_or_group)]
    command += [
        *hydra_cfg.overrides.task,
        *job_hydra_overrides,
        "hydra.mode=RUN",
        f"hydra.run.dir={quote_override(hydra_cfg.runtime.output_dir)}",
        "hydra.output_subdir=null",  # the job has written its .hydra/ already
    ]
    return command, cwd


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Lightning's script launcher, except that each worker restarts the Hydra job, not argv."""

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        self.procs = []
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        for local_rank in range(1, self.num_processes):
            worker_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            command, cwd = worker_command(local_rank)
            log.debug("Starting DDP worker %d: %s", local_rank, " ".join(command))
            self.procs.append(subprocess.Popen(command, env=worker_env, cwd=cwd))
        _workers.extend(self.procs)


def prepare(trainer: L.Trainer) -> None:
    """Make a new Trainer's DDP workers restart this Hydra job; quiet every rank but zero."""
    strategy = trainer.strategy
    launcher = getattr(strategy, "launcher", None)
    if type(launcher) is _SubprocessScriptLauncher and _hydra_job_running():
        strategy._launcher = HydraJobLauncher(
            launcher.cluster_environment, launcher.num_processes, launcher.num_nodes
        )
    quiet_other_ranks(trainer.global_rank)


def is_worker() -> bool:
    """Whether this process is a DDP worker (global rank above zero), which leaves the talking to
    rank 0."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) > 0


def _hydra_job_running() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def quiet_other_ranks(global_rank: int) -> None:
    """On every process but global rank zero: no run log file, only warnings on the console."""
    if global_rank == 0:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
        else:
            handler.setLevel(logging.WARNING)


@contextmanager
def job_scope() -> Iterator[None]:
    """One job: afterwards its DDP workers are awaited, the process group closed, the env restored.

    A sweep runs its trials one after another in one process; this way each trial starts its own
    workers on a fresh port instead of finding the last trial's rank variables and process group.
    """
    saved_env = {key: os.environ.get(key) for key in LAUNCH_ENV}
    threads = torch.get_num_threads()
    first = len(_workers)
    timeout = WORKER_TIMEOUT_S
    try:
        yield
    except BaseException:
        # stopped (a signal, a NaN) or failed: every process stops at the same step and saves
        # together, so a worker still running seconds later waits on one that has gone
        timeout = WORKER_STOP_TIMEOUT_S
        raise
    finally:
        for proc in _workers[first:]:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("DDP worker %d did not exit; stopping it", proc.pid)
                proc.kill()
                proc.wait()
        del _workers[first:]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
