"""The sweep loop on Optuna's ask-and-tell API, and the search-space syntax of hydra-optuna-sweeper.

One Hydra job per trial. Each job receives its trial's identity as ``optuna.*`` overrides, so the
training process can report the monitored metric every validation and be pruned
(``rnnlab.callbacks.pruning.OptunaPruning``). A job that raises or returns a non-finite value is told to the
study as FAIL with its error; the sweep goes on and fails only when every trial it ran failed.

Several processes may share one study (``n_jobs`` workers, relaunches, other machines):

- trial ``n`` draws its parameters with the sampler seeded ``sampler.seed + n`` (recorded as the
  trial's ``sampler_seed`` attribute), so no two processes draw the same sequence and every draw
  can be repeated from the study's record;
- a running trial sends a heartbeat to the database every ``heartbeat_interval`` seconds; a trial
  without one for ``grace_period`` seconds is told FAIL by whichever process looks next, so a
  killed process does not leave a trial RUNNING forever;
- opening a fresh database retries while another process creates Optuna's tables.
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
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
from hydra.errors import HydraException
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)


def pruner_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` less the settings its pruner does not take.

    A preset tunes the default pruner (``n_startup_trials``, ``n_warmup_steps``); choosing another
    one on the command line (``hydra/sweeper/pruner=none``, ``hyperband``) keeps those settings in
    the merged config, and the settings that pruner has no use for are left out, with a note.
    """
    import inspect

    from hydra.utils import get_class

    try:
        parameters = inspect.signature(get_class(spec["_target_"])).parameters
    except Exception:  # noqa: BLE001 - instantiate() names a bad target in a moment
        return spec
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return spec
    unused = [k for k in spec if not k.startswith("_") and k not in parameters]
    if unused:
        log.info("%s takes no %s: left out", spec["_target_"].rsplit(".", 1)[-1], ", ".join(unused))
    return {k: v for k, v in spec.items() if k not in unused}


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
WORKER_ENV = "RNNLAB_SWEEP_WORKERS_SINCE"  # set for the worker processes of a parallel sweep
DIRECTIONS = {"min": "minimize", "max": "maximize", "minimize": "minimize", "maximize": "maximize"}
SEED_ATTR = "sampler_seed"  # the seed trial n's parameters were drawn with: sampler.seed + n
HEARTBEAT_ATTR = "heartbeat_s"  # set once the trial's first heartbeat is stored
# samplers whose seed only drives their random draws: seeded again for every trial
PER_TRIAL_SEED = ("TPESampler", "RandomSampler", "GridSampler", "NSGAIISampler")
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "oracle", "mssql")


class SweepConfigError(HydraException):
    """A sweeper setting or search space that can not be used; one sentence, exit status 2."""


def check_settings(
    direction: Any, n_trials: Any, n_jobs: Any, heartbeat_interval: Any, grace_period: Any
) -> None:
    """Refuse settings that can not run, naming the key, the value and the rule."""

    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    key = "hydra.sweeper."
    if direction is not None and str(direction) not in DIRECTIONS:
        raise SweepConfigError(
            f"{key}direction={direction} is not a direction: use minimize or maximize (or min/max), "
            "or null to follow monitor.mode"
        )
    if not whole(n_trials) or n_trials < 1:
        raise SweepConfigError(
            f"{key}n_trials={n_trials} is not allowed: the study needs a whole number of trials, "
            "at least 1"
        )
    if not whole(n_jobs) or n_jobs < 1:
        raise SweepConfigError(
            f"{key}n_jobs={n_jobs} is not allowed: trials run at once must be a whole number, "
            "at least 1"
        )
    if not whole(heartbeat_interval) or heartbeat_interval < 1:
        raise SweepConfigError(
            f"{key}heartbeat_interval={heartbeat_interval} is not allowed: it must be a whole "
            "number of seconds, at least 1"
        )
    if grace_period is not None and (not whole(grace_period) or grace_period <= heartbeat_interval):
        raise SweepConfigError(
            f"{key}grace_period={grace_period} is not allowed: it must be a whole number of seconds "
            f"longer than heartbeat_interval ({heartbeat_interval}), or null for twice that"
        )


def check_bounds(where: str, low: float, high: float, use_log: bool) -> None:
    """An interval's ends: ``low <= high``, and ``low > 0`` on a log scale."""
    if low > high:
        raise SweepConfigError(
            f"{where} is not a search space: the low end ({low:g}) must not be above the high end "
            f"({high:g})"
        )
    if use_log and low <= 0:
        raise SweepConfigError(
            f"{where} is not a search space: a log interval needs a low end above 0, got {low:g}"
        )


def distribution_from_mapping(name: str, node: Mapping[str, Any]) -> BaseDistribution:
    """The structured form: ``{type: categorical|int|float, choices, low, high, step, log}``."""
    kind = str(node.get("type", "")).split(".")[-1]
    low, high, step, use_log = node.get("low"), node.get("high"), node.get("step"), node.get("log")
    where = f"hydra.sweeper.params.{name}={dict(node)}"
    if kind == "categorical":
        choices = node.get("choices")
        if not choices:
            raise SweepConfigError(f"{where} is not a search space: a categorical needs choices")
        return CategoricalDistribution(list(choices))
    if kind in ("int", "float"):
        if low is None or high is None:
            raise SweepConfigError(f"{where} is not a search space: an {kind} needs low and high")
        check_bounds(where, float(low), float(high), bool(use_log))
        try:
            if kind == "int":
                return IntDistribution(int(low), int(high), log=bool(use_log), step=int(step or 1))
            return FloatDistribution(
                float(low),
                float(high),
                log=bool(use_log),
                step=None if step is None else float(step),
            )
        except ValueError as e:
            raise SweepConfigError(f"{where} is not a search space: {e}") from None
    raise SweepConfigError(
        f"{where} is not a search space: type must be categorical, int or float, got {kind!r}"
    )


def distribution_from_override(override: Override) -> BaseDistribution | str:
    """``choice(...)``, ``range(...)``, ``interval(...)``, ``tag(log, interval(...))`` or a fixed value."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        assert isinstance(value, (ChoiceSweep, RangeSweep))
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        return CategoricalDistribution(choices)
    where = override.input_line or f"{override.get_key_element()}=..."
    try:
        if override.is_range_sweep():
            assert isinstance(value, RangeSweep) and value.start is not None
            assert value.stop is not None
            check_bounds(where, float(value.start), float(value.stop), False)
            # as in hydra-optuna-sweeper: range(low, high, step) with high included
            if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
                return FloatDistribution(value.start, value.stop, step=value.step)
            return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
        if override.is_interval_sweep():
            assert isinstance(value, IntervalSweep)
            use_log = "log" in value.tags
            check_bounds(where, float(value.start), float(value.end), use_log)
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(value.start, value.end, log=use_log)
            return FloatDistribution(float(value.start), float(value.end), log=use_log)
    except ValueError as e:  # what Optuna refuses beyond the checks above (a step, say)
        raise SweepConfigError(f"{where} is not a search space: {e}") from None
    raise SweepConfigError(f"{where} is not supported by the Optuna sweeper")


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
            raise SweepConfigError(
                f"the grid sampler needs discrete values, but {name} is continuous: "
                "give it as choice(...) or range(...)"
            )
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
        raise SweepConfigError(f"monitor.mode={mode} is not allowed: it must be min or max")
    return DIRECTIONS[mode]


def tell_study(study: optuna.Study, trial: optuna.Trial, *args: Any, **kwargs: Any) -> None:
    """``study.tell``, where the grid sampler's wish to stop an exhausted grid is no error, nor a
    trial another process already told FAIL for want of a heartbeat."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as e:  # the trial is stored before the sampler asks to stop
        if "Study.stop" not in str(e):
            raise
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("Trial %d was told FAIL meanwhile (no heartbeat in time)", trial.number)


def normalize_url(url: str) -> str:
    """A database URL SQLAlchemy opens with the driver that is installed.

    SQLAlchemy 2.1 reads ``postgresql://`` as psycopg 3; with only psycopg2 installed (the
    ``postgres`` extra) that URL becomes ``postgresql+psycopg2://``. ``postgres://`` is read as
    ``postgresql://``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"


def is_database(url: str) -> bool:
    """Whether Optuna stores this URL with SQLAlchemy (and so can keep heartbeats)."""
    return url.partition("://")[0].split("+")[0] in RDB_SCHEMES


def open_storage(
    url: str, heartbeat_interval: int, grace_period: int | None, given: str | None = None
) -> Any:
    """Optuna's storage for ``url``, with heartbeats for databases.

    Processes that open a fresh database at the same moment each try to create Optuna's tables
    and types; all but one then fail with an integrity error. Such errors are retried.
    """
    if not is_database(url):
        return url
    import sqlalchemy.exc

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # the heartbeat is kept here, around each launched trial, rather than by Study.optimize
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    tries = 10
    for attempt in range(tries):
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            if attempt == tries - 1:
                raise SweepConfigError(
                    f"cannot set up the study storage {url}: {first_line(e)}"
                ) from None
            log.info("The storage is being set up by another process; trying again")
            time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as e:
            raise SweepConfigError(
                f"hydra.sweeper.storage={given or url} can not be opened: {first_line(e)}"
            ) from None
    raise AssertionError("unreachable")


def first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class TrialSeededSampler(BaseSampler):
    """A sampler seeded ``base_seed + trial.number`` for each trial, built by ``make(seed)``.

    Processes that share a study, or relaunch it, draw from different seeds because trial numbers
    are unique, and trial ``n`` can be drawn again from ``sampler.seed`` and its number.
    """

    def __init__(self, make: Any, base_seed: int) -> None:
        self.make = make
        self.base_seed = base_seed
        self.samplers: dict[int, BaseSampler] = {}

    def for_trial(self, trial: FrozenTrial) -> BaseSampler:
        if trial.number not in self.samplers:
            if len(self.samplers) > 64:
                self.samplers.pop(min(self.samplers))
            self.samplers[trial.number] = self.make(self.base_seed + trial.number)
        return self.samplers[trial.number]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.for_trial(trial).before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.for_trial(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.for_trial(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.for_trial(trial).sample_independent(
            study, trial, param_name, param_distribution
        )

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.for_trial(trial).after_trial(study, trial, state, values)
        self.samplers.pop(trial.number, None)

    def reseed_rng(self) -> None:  # the seeds come from the trial numbers
        pass


class Heartbeat:
    """Stores a heartbeat for each trial this process runs, every ``interval`` seconds."""

    def __init__(self, storage: Any, interval: int) -> None:
        self.storage = storage
        self.interval = interval
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, trial: optuna.Trial) -> None:
        """The first heartbeat now; then the thread keeps them coming until ``stop``."""
        self.storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr(HEARTBEAT_ATTR, self.interval)
        with self.lock:
            self.trial_ids.add(trial._trial_id)
        if self.thread is None:
            self.thread = threading.Thread(target=self.beat, name="optuna-heartbeat", daemon=True)
            self.thread.start()

    def stop(self, trial: optuna.Trial) -> None:
        with self.lock:
            self.trial_ids.discard(trial._trial_id)

    def close(self) -> None:
        self.stopped.set()

    def beat(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as e:  # noqa: BLE001  (a busy database: the next beat tries again)
                    log.debug("heartbeat of trial %d not stored: %s", trial_id, e)


def heartbeat_of(storage: Any) -> int | None:
    """The storage's heartbeat interval in seconds; None when it keeps no heartbeats."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


def grace_of(storage: Any) -> int:
    """Seconds without a heartbeat after which a running trial counts as dead."""
    backend = getattr(storage, "_backend", storage)
    return backend.grace_period or 2 * backend.heartbeat_interval


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Tell FAIL every running trial whose heartbeat stopped; returns their numbers."""
    storage = study._storage
    if not heartbeat_of(storage):
        return []
    grace = grace_of(storage)
    failed = []
    error = f"its process died: no heartbeat for over {grace} s"
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        try:
            storage.set_trial_user_attr(trial_id, "error", error)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(storage.get_trial_number_from_id(trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another process told it first
    for number in failed:
        log.warning("Trial %d failed: %s", number, error)
    return failed


def trials_now(
    study: optuna.Study, states: Sequence[TrialState] | None = None
) -> list[FrozenTrial]:
    """The study's trials as the database holds them now.

    ``study.get_trials`` goes through Optuna's cache, which can miss a trial another process
    created before this one's newest finished trial; counting trials across processes needs the
    database itself.
    """
    backend = getattr(study._storage, "_backend", study._storage)
    return backend.get_all_trials(study._study_id, deepcopy=False, states=states)


def running_elsewhere(study: optuna.Study, since: str | None) -> list[FrozenTrial]:
    """Trials other processes run now: RUNNING with a live heartbeat (or, without heartbeats, the
    ones sibling workers of this parallel sweep started)."""
    running = trials_now(study, states=(TrialState.RUNNING,))
    if heartbeat_of(study._storage):
        return [t for t in running if HEARTBEAT_ATTR in t.user_attrs]
    if not since:
        return []
    start = datetime.datetime.fromisoformat(since)
    return [t for t in running if t.datetime_start is not None and t.datetime_start >= start]


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
        heartbeat_interval: int = 30,
        grace_period: int | None = None,
    ) -> None:
        # checked when the sweep starts: an error here would reach the user wrapped by Hydra
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.direction = direction
        self.study_name = study_name or "study"
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.params = params
        self.custom_search_space_name = custom_search_space
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.sampler_seed: int | None = None

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
            return normalize_url(str(self.storage))
        return f"sqlite:///{self.sweep_dir / 'optuna.db'}"

    def make_sampler(self, distributions: dict[str, BaseDistribution]) -> Any:
        """The configured sampler; one seeded per trial when it has a seed (``TrialSeededSampler``)."""
        self.sampler_seed = None
        if not self.sampler_cfg:
            return None
        cfg = OmegaConf.create(OmegaConf.to_container(self.sampler_cfg, resolve=True))
        extra: dict[str, Any] = {}
        if str(cfg.get("_target_", "")).endswith("GridSampler"):
            grid = grid_of(distributions)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
            extra["search_space"] = grid
        seed = cfg.get("seed")
        if seed is None or not str(cfg.get("_target_", "")).endswith(PER_TRIAL_SEED):
            return instantiate(cfg, **extra)
        self.sampler_seed = int(seed)
        return TrialSeededSampler(lambda s: instantiate(cfg, seed=s, **extra), int(seed))

    def sweep(self, arguments: list[str]) -> optuna.Study:
        """Run trials until the study holds ``n_trials`` finished ones."""
        check_settings(
            self.direction, self.n_trials, self.n_jobs, self.heartbeat_interval, self.grace_period
        )
        name = self.custom_search_space_name
        self.custom_search_space = get_method(name) if name else None
        params = OmegaConf.to_container(self.params, resolve=False) if self.params else {}
        distributions, fixed = search_space(params, arguments)
        pruner_spec = (
            pruner_settings(OmegaConf.to_container(self.pruner_cfg, resolve=True))
            if self.pruner_cfg
            else None
        )
        direction = DIRECTIONS.get(str(self.direction)) if self.direction else None
        direction = direction or default_direction(self.config)
        sampler = self.make_sampler(distributions)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        url = self.storage_url()
        storage = open_storage(url, self.heartbeat_interval, self.grace_period, self.storage)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=sampler,
            pruner=instantiate(pruner_spec) if pruner_spec else optuna.pruners.NopPruner(),
            direction=direction,
            load_if_exists=True,
        )
        from rnnlab.callbacks.pruning import PRUNER_ATTR  # where a trial rebuilds the pruner from

        study.set_user_attr(PRUNER_ATTR, pruner_spec)
        if os.environ.get(WORKER_ENV) is None:
            study.set_user_attr("sweep_dir", str(self.sweep_dir))
        fail_dead_trials(study)
        before = len(trials_now(study, states=FINISHED))
        log.info(
            "Study %s (%s) in %s: %d of %d trials already finished",
            self.study_name,
            direction,
            url,
            before,
            self.n_trials,
        )
        if self.n_jobs > 1 and type(self.launcher).__name__ == "BasicLauncher":
            return self.run_workers(study, url)
        heartbeat = Heartbeat(storage, self.heartbeat_interval) if storage is not url else None
        try:
            return self.run_trials(study, url, distributions, fixed, heartbeat)
        finally:
            if heartbeat is not None:
                heartbeat.close()

    def run_trials(
        self,
        study: optuna.Study,
        url: str,
        distributions: dict[str, BaseDistribution],
        fixed: dict[str, str],
        heartbeat: Heartbeat | None,
    ) -> optuna.Study:
        """Ask, launch and tell trials until the study holds ``n_trials`` finished ones.

        Trials other processes run count as on their way; when only those are left, this process
        waits for them (or for their heartbeat to stop, which makes them FAIL).
        """
        identity = [
            f"++optuna.study_name={quote(self.study_name)}",
            f"++optuna.storage={quote(url)}",
        ]
        since = os.environ.get(WORKER_ENV)  # set in the worker processes of a parallel sweep
        tally = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        last_error = ""
        waiting = False
        while True:
            fail_dead_trials(study)
            finished = len(trials_now(study, states=FINISHED))
            elsewhere = running_elsewhere(study, since)
            remaining = self.n_trials - finished - len(elsewhere)
            if remaining <= 0:
                if heartbeat is None or not elsewhere or finished >= self.n_trials:
                    break
                if not waiting:
                    log.info(
                        "Waiting for trials %s, running in other processes",
                        ", ".join(str(t.number) for t in elsewhere),
                    )
                waiting = True
                time.sleep(min(self.heartbeat_interval, 5))
                continue
            waiting = False
            trials = []
            for _ in range(min(self.n_jobs, remaining)):
                trial = study.ask(distributions)
                if heartbeat is not None:
                    heartbeat.start(trial)
                if self.sampler_seed is not None and not trial._fixed_params:  # not enqueued
                    trial.set_user_attr(SEED_ATTR, self.sampler_seed + trial.number)
                trials.append(trial)
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
            finally:
                for trial in trials:
                    if heartbeat is not None:
                        heartbeat.stop(trial)
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

        Each worker gets ``cpu_count // n_jobs`` threads and logs to ``<sweep dir>/worker_<i>.log``.
        A worker that dies (a signal, say) is reported, and this process then exits with status 1.
        """
        since = datetime.datetime.now()
        threads = max(1, (os.cpu_count() or 1) // self.n_jobs)
        replaced = ("hydra.sweeper.n_jobs=", "hydra.sweep.dir=", "hydra.sweeper.storage=")
        replaced += ("hydra.sweeper.study_name=",)
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
                log_file = (self.sweep_dir / f"worker_{i}.log").open("w")
                process = subprocess.Popen(
                    command, env=env, stdout=log_file, stderr=subprocess.STDOUT
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
        fail_dead_trials(study)
        ran = [
            t
            for t in trials_now(study, states=FINISHED)
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
        died = [
            f"{died_how(i, process.returncode)} (its log: {self.sweep_dir / f'worker_{i}.log'})"
            for i, (process, _) in enumerate(workers)
            if process.returncode < 0
        ]
        if died:
            summarize(self.sweep_dir)
            print(
                f"error: {'; '.join(died)}; the study {self.study_name!r} holds "
                f"{len(trials_now(study, states=FINISHED))} of {self.n_trials} "
                "finished trials and the same command runs the rest",
                file=sys.stderr,
            )
            raise SystemExit(1)
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


def died_how(index: int, returncode: int) -> str:
    """``worker 1 died (killed by SIGKILL)``."""
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"worker {index} died (killed by {name})"


def summarize(sweep_dir: Path) -> None:
    """The end-of-sweep summary (``rnnlab.sweeps.print_summary``), when rnnlab is there."""
    try:
        from rnnlab.sweeps import print_summary
    except ImportError:
        return
    print_summary(sweep_dir)
