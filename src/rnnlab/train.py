"""Train, test and record one run: ``train(cfg) -> metrics``, called by `train.py` and by tests."""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from rnnlab import distributed, review
from rnnlab.callbacks.checkpoint import ConfigInCheckpoint
from rnnlab.callbacks.comparison import ComparisonScalars
from rnnlab.callbacks.progress import EpochLog
from rnnlab.callbacks.pruning import trial_callbacks
from rnnlab.callbacks.run_guard import STOPS, RunGuard, stopped
from rnnlab.checkpoints import AtomicCheckpointIO, check_resume, resolve_ckpt_path
from rnnlab.config_checks import check_arguments, check_config, check_monitor, check_precision
from rnnlab.errors import EXIT_CODES, RnnlabError
from rnnlab.records import RunRecord, current_metrics, metric_value, report
from rnnlab.review import continue_event_files
from rnnlab.tasks import build_task, default_monitor

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
    metric, mode = default_monitor(dims.task)
    with open_dict(cfg):
        cfg.monitor.metric = cfg.monitor.metric or metric
        cfg.monitor.mode = cfg.monitor.mode or mode
    if cfg.monitor.mode not in ("min", "max"):
        raise RnnlabError(f"monitor.mode must be min or max, got {cfg.monitor.mode!r}")
    net = build(cfg, "model", **dims.net_kwargs())
    optimizer = build(cfg, "optimizer")
    scheduler = build(cfg, "scheduler")  # may read ${monitor.mode}
    check_arguments("optimizer", optimizer)
    check_arguments("scheduler", scheduler)
    task_kwargs = {"nan_policy": cfg.get("nan_policy", "stop")}
    if cfg.get("task") is not None:
        task_kwargs.update(OmegaConf.to_container(cfg.task, resolve=True))
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
def log_hparams(
    loggers: list[Logger],
    hparams: dict[str, Any],
    metric_names: list[str],
    swept: list[str] = (),
    place: str = "",
) -> None:
    """Register the run in TensorBoard's HParams tab with the metrics to compare runs by.

    Only the summaries are written: the metric values come from the scalars the run logs, so no
    placeholder point is added to any curve. Every run has the same first two metric columns,
    ``hparams/best`` and ``hparams/test``; ``swept`` keys are shown first, and the row is called
    ``<what the run is> @ <place>`` (``rnnlab.review.trial_name``).
    """
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            trial = review.trial_name(logger.version, place) if place else ""
            exp, ssi, sei = review.hparams_summaries(hparams, metric_names, list(swept), trial)
            writer = logger.experiment._get_file_writer()
            for summary in (exp, ssi, sei):
                writer.add_summary(summary)
            writer.flush()
        elif logger is not None:
            logger.log_hyperparams(hparams)


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


def train(cfg: DictConfig, extra_callbacks: list[L.Callback] = ()) -> dict[str, float]:
    """Fit, then test the best checkpoint; write metrics.json; return the metrics.

    ``extra_callbacks`` join the configured ones (benchmarks and tests use it to observe a run).
    """
    quiet_lightning_logging()
    check_config(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, dims, net, task = build_components(cfg)
    check_monitor(task, cfg.monitor.metric)
    resume_step = check_resume(ckpt_path, task, cfg)
    if cfg.get("compile"):
        net.compile(dynamic=True)  # in place: parameter names and checkpoints stay the same
    trainer, guard = build_trainer(cfg, net, dims, resume_step, extra_callbacks)
    record = RunRecord(Path(cfg.paths.output_dir), cfg.monitor.metric, cfg.monitor.mode)
    record.write_run_info(trainer)
    log_model(net, datamodule, task)
    if cfg.get("train", True):
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except STOPS as e:  # a signal or a NaN loss: record where the run got to, then say so
            record.write(trainer, current_metrics(trainer), stopped_by=e)
            raise stopped(e, trainer, guard) from None
    metrics = current_metrics(trainer)
    if cfg.get("test", True):
        metrics.update(
            test(trainer, task, datamodule, None if cfg.get("train", True) else ckpt_path)
        )
    metrics = dict(sorted(metrics.items()))
    record.write(trainer, metrics)
    if trainer.is_global_zero:
        report(record.output_dir, metrics, getattr(datamodule, "baselines", {}))
    return metrics


def build_trainer(
    cfg: DictConfig, net, dims, resume_step: int | None, extra_callbacks: list[L.Callback] = ()
) -> tuple[L.Trainer, RunGuard]:
    """The configured trainer, with what every run gets besides the ``callbacks`` group.

    That is: the run config in every checkpoint, the run guard (stop and resume, the NaN guard),
    the Optuna trial's pruning, atomic checkpoint writes, TensorBoard folders named for the run
    and continued on resume, the HParams entry, the DDP worker launch, the precision probe.
    """
    callbacks = instantiate_group(cfg, "callbacks")
    loggers = instantiate_group(cfg, "logger")
    review.name_event_folders(loggers, cfg)  # <run>/lstm-on-adding/, <job>/model=gru,seed=2/
    continue_event_files(loggers, resume_step)
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    else:
        callbacks.append(ComparisonScalars(cfg.monitor.metric))
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    guard = RunGuard(
        cfg.seed, Path(cfg.paths.output_dir) / "checkpoints", cfg.get("nan_skip_limit")
    )
    callbacks += [ConfigInCheckpoint(OmegaConf.to_container(cfg, resolve=True)), guard]
    callbacks.append(EpochLog(cfg.monitor.metric))  # the epoch lines in train.log, too
    callbacks += [*trial_callbacks(cfg), *extra_callbacks]  # an Optuna trial may be pruned
    try:
        trainer: L.Trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            plugins=[
                AtomicCheckpointIO(cfg.get("checkpoint_writes", "background") == "background")
            ],
        )
    except InstantiationException as e:
        raise RnnlabError(f"invalid trainer config: {e.__cause__ or e}") from e
    except (ValueError, RuntimeError) as e:  # e.g. MisconfigurationException for devices
        raise RnnlabError(f"invalid trainer config: {e}") from e
    distributed.prepare(trainer)  # DDP workers restart this Hydra job; ranks > 0 stay quiet
    check_precision(trainer.precision, trainer.strategy.root_device.type, net, dims)
    if loggers:
        monitor = cfg.monitor.metric
        metric_names = [monitor, f"{monitor}_best", monitor.replace("val/", "test/", 1)]
        metric_names += [m for c in trainer.callbacks for m in getattr(c, "hparams_metrics", ())]
        hparams = review.review_hparams(cfg, flat_hparams(cfg))
        log_hparams(loggers, hparams, metric_names, review.swept_keys(), review.run_place(cfg))
    return trainer, guard


def log_model(net, datamodule, task) -> None:
    n_params = sum(p.numel() for p in net.parameters())
    log.info(
        "Model %s (%s parameters) on %s, task %s",
        type(net).__name__,
        f"{n_params:,}",
        type(datamodule).__name__,
        type(task).__name__,
    )


def test(trainer: L.Trainer, task, datamodule, ckpt_path: str | None) -> dict[str, float]:
    """Test the best checkpoint (or ``ckpt_path``, or the current weights); the test metrics."""
    if ckpt_path is None and trainer.checkpoint_callback:
        ckpt_path = trainer.checkpoint_callback.best_model_path or None
    if not ckpt_path:
        log.info("No best checkpoint: testing the current weights")
    results = trainer.test(
        task, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True
    )
    return {k: metric_value(v) for r in results for k, v in r.items()}


def in_sweep() -> bool:
    """Whether this run is one job of a Hydra multirun (a grid or an Optuna study)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def log_to_files(level: int, message: str) -> None:
    """Write ``message`` to the run's log files (train.log) but not to the console."""
    record = log.makeRecord(log.name, level, __file__, 0, message, (), None)
    for logger in (log, logging.getLogger()):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and level >= handler.level:
                handler.handle(record)


def run(cfg: DictConfig) -> float | None:
    """What `train.py` calls: train and return the sweep metric.

    An error is noted in the run's train.log and raised on: ``rnnlab.cli.main`` says it in one
    sentence with its exit code, and a sweep records the job as failed and goes on, except after
    a signal (SIGTERM, Ctrl-C), which stops the whole sweep.
    """
    try:
        with distributed.job_scope():
            metrics = train(cfg)
    except RnnlabError as e:
        code = getattr(e, "exit_code", 2)
        if not in_sweep():
            log_to_files(logging.ERROR, str(e))  # the console gets it once, from the CLI
            raise
        log.error("%s", e)
        if code in (EXIT_CODES["SIGINT"], EXIT_CODES["SIGTERM"]):
            sys.exit(code)
        raise
    key = cfg.get("optimized_metric") or f"{cfg.monitor.metric}_best"
    value = metrics.get(key)
    if value is None:
        return None
    return value if math.isfinite(value) else float("nan")
