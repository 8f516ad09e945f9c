"""The sweep loop on Optuna's ask-and-tell API, and the search-space syntax of hydra-optuna-sweeper.

One Hydra job per trial. Each job receives its trial's identity as ``optuna.*`` overrides, so the
training process can report the monitored metric every validation and be pruned
(``rnnlab.pruning.OptunaPruning``). A job that raises or returns a non-finite value is told to the
study as FAIL with its error; the sweep goes on and fails only when every trial it ran failed.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
PRUNER_ATTR = "rnnlab_pruner"  # the pruner's config, so a trial's own process can rebuild it
WORKER_ENV = "RNNLAB_SWEEP_WORKERS_SINCE"  # set for the worker processes of a parallel sweep
DIRECTIONS = {"min": "minimize", "max": "maximize", "minimize": "minimize", "maximize": "maximize"}


def distribution_from_mapping(name: str, node: Mapping[str, Any]) -> BaseDistribution:
    """The structured form: ``{type: categorical|int|float, choices, low, high, step, log}``."""
    kind = str(node.get("type", "")).split(".")[-1]
    low, high, step, use_log = node.get("low"), node.get("high"), node.get("step"), node.get("log")
    if kind == "categorical":
        choices = node.get("choices")
        if not choices:
            raise ValueError(f"search space {name}: a categorical needs choices")
        return CategoricalDistribution(list(choices))
    if kind in ("int", "float"):
        if low is None or high is None:
            raise ValueError(f"search space {name}: an {kind} needs low and high")
        if kind == "int":
            return IntDistribution(int(low), int(high), log=bool(use_log), step=int(step or 1))
        return FloatDistribution(
            float(low), float(high), log=bool(use_log), step=None if step is None else float(step)
        )
    raise ValueError(f"search space {name}: type must be categorical, int or float, got {kind!r}")


def distribution_from_override(override: Override) -> BaseDistribution | str:
    """``choice(...)``, ``range(...)``, ``interval(...)``, ``tag(log, interval(...))`` or a fixed value."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        assert isinstance(value, (ChoiceSweep, RangeSweep))
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep) and value.start is not None and value.stop is not None
        # as in hydra-optuna-sweeper: range(low, high, step) with high included
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        use_log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=use_log)
        return FloatDistribution(float(value.start), float(value.end), log=use_log)
    raise ValueError(f"{override.input_line} is not supported by the Optuna sweeper")


def search_space(
    params: Mapping[str, Any] | None, arguments: Sequence[str]
) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The distributions to sample and the fixed overrides, from ``params`` and the command line."""
    distributions: dict[str, BaseDistribution] = {}
    lines: list[str] = []
    for name, value in (params or {}).items():
        if isinstance(value, Mapping):
            distributions[str(name)] = distribution_from_mapping(str(name), value)
        else:
            lines.append(f"{name}={value}")
    lines.extend(arguments)
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        name = override.get_key_element()
        value = distribution_from_override(override)
        if isinstance(value, BaseDistribution):
            distributions[name] = value
            fixed.pop(name, None)
        else:  # a plain value (from the command line) fixes the parameter
            fixed[name] = value
            distributions.pop(name, None)
    return distributions, fixed


def grid_of(distributions: Mapping[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every value of each discrete distribution, for optuna's GridSampler."""
    grid: dict[str, list[Any]] = {}
    for name, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = int(round((dist.high - dist.low) / dist.step))
            grid[name] = [dist.low + i * dist.step for i in range(n + 1)]
        else:
            raise ValueError(f"the grid sampler needs discrete values; {name} is continuous")
    return grid


def quote(text: str) -> str:
    """A Hydra override value that keeps ``text`` verbatim (URLs, paths)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def default_direction(config: DictConfig) -> str:
    """The direction a study of this app optimizes: from ``monitor.mode`` or the task's own."""
    mode = OmegaConf.select(config, "monitor.mode", default=None)
    if mode is None:
        try:
            from rnnlab.sweeps import monitor_mode
        except ImportError:
            mode = "min"
        else:
            mode = monitor_mode(config)
    if mode not in DIRECTIONS:
        raise ValueError(f"monitor.mode must be min or max, got {mode!r}")
    return DIRECTIONS[mode]


def in_flight(study: optuna.Study, since: str | None) -> int:
    """Trials that sibling workers of this parallel sweep are running now."""
    if not since:
        return 0
    start = datetime.datetime.fromisoformat(since)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return sum(t.datetime_start is not None and t.datetime_start >= start for t in running)


def tell_study(study: optuna.Study, trial: optuna.Trial, *args: Any, **kwargs: Any) -> None:
    """``study.tell``, where the grid sampler's wish to stop an exhausted grid is no error."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as e:  # the trial is stored before the sampler asks to stop
        if "Study.stop" not in str(e):
            raise


class OptunaSweeperImpl:
    """The study, its search space and the loop that launches and tells trials."""

    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: Any,
        study_name: str | None,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        params: Any,
        custom_search_space: str | None,
    ) -> None:
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.direction = direction
        self.study_name = study_name or "study"
        self.storage = storage
        if n_trials < 0 or n_jobs < 1:
            raise ValueError(f"need n_trials >= 0 and n_jobs >= 1, got {n_trials} and {n_jobs}")
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.params = params
        self.custom_search_space = get_method(custom_search_space) if custom_search_space else None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()

    def storage_url(self) -> str:
        """The configured database URL, or an SQLite file inside the sweep directory."""
        if self.storage:
            return str(self.storage)
        return f"sqlite:///{self.sweep_dir / 'optuna.db'}"

    def make_sampler(self, distributions: dict[str, BaseDistribution]) -> Any:
        if not self.sampler_cfg:
            return None
        cfg = OmegaConf.create(OmegaConf.to_container(self.sampler_cfg, resolve=True))
        if str(cfg.get("_target_", "")).endswith("GridSampler"):
            grid = grid_of(distributions)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
            return instantiate(cfg, search_space=grid)
        return instantiate(cfg)

    def sweep(self, arguments: list[str]) -> optuna.Study:
        """Run trials until the study holds ``n_trials`` finished ones."""
        params = OmegaConf.to_container(self.params, resolve=False) if self.params else {}
        distributions, fixed = search_space(params, arguments)
        pruner_spec = (
            OmegaConf.to_container(self.pruner_cfg, resolve=True) if self.pruner_cfg else None
        )
        direction = DIRECTIONS.get(str(self.direction)) if self.direction else None
        direction = direction or default_direction(self.config)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        url = self.storage_url()
        study = optuna.create_study(
            study_name=self.study_name,
            storage=url,
            sampler=self.make_sampler(distributions),
            pruner=instantiate(pruner_spec) if pruner_spec else optuna.pruners.NopPruner(),
            direction=direction,
            load_if_exists=True,
        )
        study.set_user_attr(PRUNER_ATTR, pruner_spec)
        study.set_user_attr("sweep_dir", str(self.sweep_dir))
        before = len(study.get_trials(deepcopy=False, states=FINISHED))
        log.info(
            "Study %s (%s) in %s: %d of %d trials already finished",
            self.study_name,
            direction,
            url,
            before,
            self.n_trials,
        )
        identity = [
            f"++optuna.study_name={quote(self.study_name)}",
            f"++optuna.storage={quote(url)}",
        ]
        if self.n_jobs > 1 and type(self.launcher).__name__ == "BasicLauncher":
            return self.run_workers(study, url)
        since = os.environ.get(WORKER_ENV)  # set in the worker processes of a parallel sweep
        tally = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        last_error = ""
        while True:
            finished = len(study.get_trials(deepcopy=False, states=FINISHED))
            remaining = self.n_trials - finished - in_flight(study, since)
            if remaining <= 0:
                break
            trials = [study.ask(distributions) for _ in range(min(self.n_jobs, remaining))]
            batch = []
            for trial in trials:
                if self.custom_search_space is not None:
                    self.custom_search_space(self.config, trial)
                for name, value in fixed.items():
                    trial.set_user_attr(name, value)
                sampled = [f"{name}={value}" for name, value in trial.params.items()]
                fixed_lines = [f"{name}={value}" for name, value in fixed.items()]
                batch.append((*sampled, *fixed_lines, *identity, f"++optuna.trial={trial.number}"))
            try:
                returns = self.launch(trials, batch)
            except BaseException:  # Ctrl-C or a signal stops the sweep: its trials end as FAIL
                for trial in trials:
                    trial.set_user_attr("error", "interrupted: the sweep was stopped")
                    tell_study(study, trial, state=TrialState.FAIL)
                raise
            for trial, ret in zip(trials, returns, strict=True):
                state, error = self.tell(study, trial, ret)
                tally[state] += 1
                last_error = error or last_error
        ran = sum(tally.values())
        log.info(
            "Study %s: %d trials run now (%d complete, %d pruned, %d failed)",
            self.study_name,
            ran,
            tally[TrialState.COMPLETE],
            tally[TrialState.PRUNED],
            tally[TrialState.FAIL],
        )
        if ran and tally[TrialState.FAIL] == ran:
            raise RuntimeError(f"every trial of the sweep failed; the last error: {last_error}")
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if done:
            best = study.best_trial
            log.info("Best trial %d: %s = %s", best.number, best.params, best.value)
        return study

    def run_workers(self, study: optuna.Study, url: str) -> optuna.Study:
        """Run ``n_jobs`` worker processes of this same command on the shared study, then report.

        Each worker gets ``cpu_count // n_jobs`` threads and its own sampler seed, and logs to
        ``<sweep dir>/worker_<i>.log``.
        """
        since = datetime.datetime.now()
        threads = max(1, (os.cpu_count() or 1) // self.n_jobs)
        seed = (self.sampler_cfg or {}).get("seed")
        replaced = ("hydra.sweeper.n_jobs=", "hydra.sweep.dir=", "hydra.sweeper.storage=")
        replaced += ("hydra.sweeper.study_name=", "hydra.sweeper.sampler.seed=")
        argv = [a for a in sys.argv[1:] if not a.lstrip("+").startswith(replaced)]
        command = [
            sys.executable,
            sys.argv[0],
            *argv,
            "hydra.sweeper.n_jobs=1",
            f"hydra.sweep.dir={quote(str(self.sweep_dir))}",
            f"hydra.sweeper.storage={quote(url)}",
            f"hydra.sweeper.study_name={quote(self.study_name)}",
        ]
        env = {**os.environ, WORKER_ENV: since.isoformat(), "OMP_NUM_THREADS": str(threads)}
        log.info("Running %d workers with %d threads each", self.n_jobs, threads)
        workers = []
        try:
            for i in range(self.n_jobs):
                own_seed = [] if seed is None else [f"hydra.sweeper.sampler.seed={seed + i}"]
                log_file = (self.sweep_dir / f"worker_{i}.log").open("w")
                process = subprocess.Popen(
                    [*command, *own_seed], env=env, stdout=log_file, stderr=subprocess.STDOUT
                )
                workers.append((process, log_file))
            for process, _ in workers:
                process.wait()
        finally:
            for process, log_file in workers:
                if process.poll() is None:
                    process.terminate()
                    process.wait()
                log_file.close()
        ran = [
            t
            for t in study.get_trials(deepcopy=False, states=FINISHED)
            if t.datetime_start is not None and t.datetime_start >= since
        ]
        states = [t.state for t in ran]
        log.info(
            "Study %s: %d trials run now by %d workers (%d complete, %d pruned, %d failed)",
            self.study_name,
            len(ran),
            self.n_jobs,
            states.count(TrialState.COMPLETE),
            states.count(TrialState.PRUNED),
            states.count(TrialState.FAIL),
        )
        if ran and states.count(TrialState.FAIL) == len(ran):
            error = ran[-1].user_attrs.get("error", "")
            raise RuntimeError(f"every trial of the sweep failed; the last error: {error}")
        return study

    def launch(self, trials: list[optuna.Trial], batch: list[tuple[str, ...]]) -> list[Any]:
        """Run a batch of jobs; each job's number (and directory) is its trial number."""
        numbers = [t.number for t in trials]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launcher.launch(batch, initial_job_idx=numbers[0]))
        returns = []
        for number, overrides in zip(numbers, batch, strict=True):
            returns.extend(self.launcher.launch([overrides], initial_job_idx=number))
        return returns

    def tell(
        self, study: optuna.Study, trial: optuna.Trial, ret: Any
    ) -> tuple[TrialState, str | None]:
        """Tell the study how a trial ended: COMPLETE, PRUNED, or FAIL with its error."""
        try:
            if ret.status == JobStatus.FAILED:
                # what the job raised (JobReturn.return_value would also print it as an error)
                raise ret._return_value
            value = ret.return_value
        except optuna.TrialPruned as e:
            tell_study(study, trial, state=TrialState.PRUNED)
            log.info("Trial %d pruned: %s", trial.number, e)
            return TrialState.PRUNED, None
        except BaseException as e:  # noqa: BLE001  (any crash of a trial is that trial's failure)
            if isinstance(e, KeyboardInterrupt):
                raise
            error = f"{type(e).__name__}: {e}".strip()
            trial.set_user_attr("error", error)
            trial.set_user_attr("traceback", "".join(traceback.format_exception(e))[-4000:])
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if math.isfinite(number):
                tell_study(study, trial, number)
                return TrialState.COMPLETE, None
            error = f"the trial returned {value!r}, not a finite number"
            trial.set_user_attr("error", error)
        tell_study(study, trial, state=TrialState.FAIL)
        log.warning("Trial %d failed: %s", trial.number, error)
        return TrialState.FAIL, error
