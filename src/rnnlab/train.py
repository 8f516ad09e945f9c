"""Train, test and record one run: ``train(cfg) -> metrics``, called by `train.py` and by tests."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from rnnlab import distributed, reliability
from rnnlab.checks import check_config, check_precision
from rnnlab.config import RnnlabError
from rnnlab.pruning import trial_callbacks
from rnnlab.tasks import TASKS, build_task

log = logging.getLogger("rnnlab")


class _DropNoise(logging.Filter):
    """Drops Lightning's advertising tips from the console and the run log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def quiet_lightning_logging() -> None:
    """Let Lightning's messages reach the run's own handlers (console and train.log) once, not twice."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                logger.removeHandler(handler)
        logger.propagate = True
    noise = _DropNoise()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(noise)
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")


def build(cfg: DictConfig, key: str, **kwargs) -> Any:
    """Instantiate ``cfg[key]``; an impossible value becomes an RnnlabError naming it."""
    node = cfg.get(key)
    if not node:
        return None
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
        raise RnnlabError(f"invalid {key} config: {message}") from e
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise RnnlabError(f"invalid {key} config: {e}") from e


def build_components(cfg: DictConfig, datamodule_state: dict | None = None):
    """The datamodule, net and task a config describes (sizes come from the data).

    ``datamodule_state`` (from a checkpoint) restores what the data learned in training, such as a
    vocabulary, before the sizes are read.
    """
    datamodule = build(cfg, "data")
    if datamodule is None:
        raise RnnlabError("no data config: choose one with data=<name>")
    if datamodule_state:
        datamodule.load_state_dict(datamodule_state)
    dims = datamodule.dims
    task_cls = TASKS.get(dims.task)
    if task_cls is not None:
        with open_dict(cfg):
            cfg.monitor.metric = cfg.monitor.metric or task_cls.monitor
            cfg.monitor.mode = cfg.monitor.mode or task_cls.mode
    if cfg.monitor.mode not in ("min", "max"):
        raise RnnlabError(f"monitor.mode must be min or max, got {cfg.monitor.mode!r}")
    net = build(cfg, "model", **dims.net_kwargs())
    optimizer = build(cfg, "optimizer")
    scheduler = build(cfg, "scheduler")  # may read ${monitor.mode}
    task_kwargs = {}
    if cfg.get("task") is not None:
        task_kwargs = OmegaConf.to_container(cfg.task, resolve=True)
    try:
        task = build_task(dims, net, optimizer=optimizer, scheduler=scheduler, **task_kwargs)
    except (ValueError, TypeError) as e:
        raise RnnlabError(f"invalid task config: {e}") from e
    task.set_monitor(cfg.monitor.metric, cfg.monitor.mode)
    return datamodule, dims, net, task


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The config flattened to ``group.key: value`` with TensorBoard-safe values."""
    container = OmegaConf.to_container(cfg, resolve=True)
    keep = ("data", "model", "optimizer", "scheduler", "task", "seed")
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:
            flat[prefix] = str(value)

    for key in keep:
        if key in container:
            walk(key, container[key])
    trainer = container.get("trainer") or {}
    for k in ("max_epochs", "precision", "gradient_clip_val"):
        if k in trainer:
            walk(f"trainer.{k}", trainer[k])
    return {
        k: v for k, v in flat.items() if not k.endswith("_target_") and not k.endswith("_partial_")
    }


@rank_zero_only
def log_hparams(loggers: list[Logger], hparams: dict[str, Any], metric_names: list[str]) -> None:
    """Register the run in TensorBoard's HParams tab with the metrics to compare runs by.

    Only the summaries are written: the metric values come from the scalars the run logs, so no
    placeholder point is added to any curve.
    """
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            from torch.utils.tensorboard.summary import hparams as hparams_summary

            exp, ssi, sei = hparams_summary(hparams, {name: 0.0 for name in metric_names})
            writer = logger.experiment._get_file_writer()
            for summary in (exp, ssi, sei):
                writer.add_summary(summary)
            writer.flush()
        elif logger is not None:
            logger.log_hyperparams(hparams)


class ConfigInCheckpoint(L.Callback):
    """Stores the resolved run config in every checkpoint, so eval and predict need nothing else."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["rnnlab"] = {"config": self.config, "version": 1}


def instantiate_group(cfg: DictConfig, key: str) -> list:
    """Instantiate every entry of a dict-of-components group (callbacks, loggers); nulls are skipped."""
    node = cfg.get(key)
    if not node:
        return []
    out = []
    for name, sub in node.items():
        if sub is None or not sub.get("_target_"):
            continue
        try:
            out.append(instantiate(sub))
        except InstantiationException as e:
            cause = e.__cause__ or e
            raise RnnlabError(f"invalid {key}.{name} config: {cause}") from e
    return out


def metric_value(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def train(cfg: DictConfig, extra_callbacks: list[L.Callback] = ()) -> dict[str, float]:
    """Fit, then test the best checkpoint; write metrics.json; return the metrics.

    ``extra_callbacks`` join the configured ones (benchmarks and tests use it to observe a run).
    """
    start = time.time()
    quiet_lightning_logging()
    output_dir = Path(cfg.paths.output_dir)
    check_config(cfg)
    ckpt_path = reliability.resolve_ckpt_path(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule, dims, net, task = build_components(cfg)
    task.nan_policy = cfg.get("nan_policy", "stop")
    resume_step = reliability.check_resume(ckpt_path, task, cfg)
    if cfg.get("compile"):
        net.compile(dynamic=True)  # in place: parameter names and checkpoints stay the same

    callbacks = instantiate_group(cfg, "callbacks")
    loggers = instantiate_group(cfg, "logger")
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    config_container = OmegaConf.to_container(cfg, resolve=True)
    guard = reliability.RunGuard(cfg.seed, output_dir / "checkpoints")
    callbacks += [ConfigInCheckpoint(config_container), guard, *extra_callbacks]
    reliability.continue_event_files(loggers, resume_step)
    callbacks.extend(trial_callbacks(cfg))  # an Optuna trial reports and may be pruned
    plugins = [reliability.AtomicCheckpointIO()]
    try:
        trainer: L.Trainer = instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins
        )
    except InstantiationException as e:
        raise RnnlabError(f"invalid trainer config: {e.__cause__ or e}") from e
    except (ValueError, RuntimeError) as e:  # e.g. MisconfigurationException for devices
        raise RnnlabError(f"invalid trainer config: {e}") from e
    distributed.prepare(trainer)  # DDP workers restart this Hydra job; ranks > 0 stay quiet
    check_precision(trainer.precision, trainer.strategy.root_device.type, net, dims)

    monitor = cfg.monitor.metric
    best_key = f"{monitor}_best"
    if loggers:
        test_key = monitor.replace("val/", "test/", 1)
        log_hparams(loggers, flat_hparams(cfg), [monitor, best_key, test_key])

    n_params = sum(p.numel() for p in net.parameters())
    log.info(
        "Model %s (%s parameters) on %s, task %s",
        type(net).__name__,
        f"{n_params:,}",
        type(datamodule).__name__,
        type(task).__name__,
    )

    git = reliability.git_info()
    if trainer.is_global_zero:
        reliability.write_run_info(output_dir, git)
    if cfg.get("train", True):
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except reliability.STOPS as e:
            write_metrics(
                output_dir,
                trainer,
                current_metrics(trainer),
                monitor,
                start,
                git,
                e,
                cfg.monitor.mode,
            )
            raise reliability.stopped(e, trainer, guard) from None
    metrics = current_metrics(trainer)

    if cfg.get("test", True):
        ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not cfg.get("train", True):
            ckpt = ckpt_path
        if not ckpt:
            log.info("No best checkpoint: testing the current weights")
        test_results = trainer.test(
            task, datamodule=datamodule, ckpt_path=ckpt or None, verbose=False, weights_only=True
        )
        for results in test_results:
            metrics.update({k: metric_value(v) for k, v in results.items()})

    metrics = {k: v for k, v in sorted(metrics.items())}
    write_metrics(output_dir, trainer, metrics, monitor, start, git, mode=cfg.monitor.mode)
    if trainer.is_global_zero:
        report(output_dir, metrics, getattr(datamodule, "baselines", {}))
    return metrics


def current_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The epoch-level metrics the trainer holds now (training steps left out)."""
    return {
        k: metric_value(v)
        for k, v in sorted(trainer.callback_metrics.items())
        if not k.startswith("train/") or k == "train/loss_epoch"
    }


def write_metrics(
    output_dir: Path,
    trainer: L.Trainer,
    metrics: dict[str, float],
    monitor: str,
    start: float,
    git: dict[str, Any],
    stopped_by: BaseException | None = None,
    mode: str | None = None,
) -> None:
    """``metrics.json``: the metrics, where the run got to, its git state and how it ended."""
    record = {
        "metrics": metrics,
        "monitor": monitor,
        "mode": mode,
        "best_model_path": trainer.checkpoint_callback.best_model_path
        if trainer.checkpoint_callback
        else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "duration_s": round(time.time() - start, 3),
        "status": reliability.status_of(stopped_by),
        **git,
    }
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")


def report(output_dir: Path, metrics: dict[str, float], baselines: dict[str, float]) -> None:
    """Print the run directory and the final metrics, each beside the trivial baseline if known."""
    lines = []
    for k, v in metrics.items():
        if k.startswith(("test/", "val/")):
            base = baselines.get(k.split("/", 1)[1])
            lines.append(
                f"  {k:<22} {v:.4f}" + (f"   (baseline {base:.4f})" if base is not None else "")
            )
    log.info("Run directory: %s\n%s", output_dir, "\n".join(lines))


def in_sweep() -> bool:
    """Whether this run is one job of a Hydra multirun (a grid or an Optuna study)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run(cfg: DictConfig) -> float | None:
    """What `train.py` calls: train, print a clear sentence on bad input, return the sweep metric."""
    try:
        with distributed.job_scope():
            metrics = train(cfg)
    except RnnlabError as e:
        log.error("%s", e)
        signal_codes = (reliability.EXIT_CODES["SIGINT"], reliability.EXIT_CODES["SIGTERM"])
        if in_sweep() and getattr(e, "exit_code", 2) not in signal_codes:
            raise  # the sweeper records this job as failed and goes on; a signal stops the sweep
        print(f"error: {e}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))
    key = cfg.get("optimized_metric") or f"{cfg.monitor.metric}_best"
    value = metrics.get(key)
    if value is None:
        return None
    return value if math.isfinite(value) else float("nan")
