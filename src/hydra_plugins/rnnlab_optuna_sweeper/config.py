"""The sweeper's config schema, registered as ``hydra/sweeper=rnnlab_optuna`` with its samplers and pruners."""

from dataclasses import dataclass, field
from typing import Any, Optional  # no PEP 604 here: OmegaConf reads these hints at runtime

from hydra.core.config_store import ConfigStore

SWEEPER = "hydra_plugins.rnnlab_optuna_sweeper.optuna_sweeper.RnnlabOptunaSweeper"

SAMPLERS: dict[str, dict[str, Any]] = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": 10},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "grid": {"_target_": "optuna.samplers.GridSampler", "seed": None},
    "qmc": {"_target_": "optuna.samplers.QMCSampler", "seed": None},
    "nsga2": {"_target_": "optuna.samplers.NSGAIISampler", "seed": None},
}

PRUNERS: dict[str, Optional[dict[str, Any]]] = {  # noqa: UP045
    "median": {
        "_target_": "optuna.pruners.MedianPruner",
        "n_startup_trials": 5,
        "n_warmup_steps": 0,
        "interval_steps": 1,
    },
    "percentile": {
        "_target_": "optuna.pruners.PercentilePruner",
        "percentile": 25.0,
        "n_startup_trials": 5,
        "n_warmup_steps": 0,
    },
    "successive_halving": {"_target_": "optuna.pruners.SuccessiveHalvingPruner"},
    "hyperband": {"_target_": "optuna.pruners.HyperbandPruner"},
    "threshold": {"_target_": "optuna.pruners.ThresholdPruner", "lower": None, "upper": None},
    "none": {"_target_": "optuna.pruners.NopPruner"},  # never prune
}


@dataclass
class RnnlabOptunaSweeperConf:
    """``hydra.sweeper``: what to search, how, and where the study is stored."""

    defaults: list[Any] = field(
        default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "median"}]
    )
    _target_: str = SWEEPER
    _recursive_: bool = False
    sampler: Any = None  # an optuna.samplers config (group hydra/sweeper/sampler)
    pruner: Any = None  # an optuna.pruners config (group hydra/sweeper/pruner); null: never prune
    direction: Any = None  # minimize | maximize; null: from monitor.mode (or the task's own)
    study_name: Optional[str] = None  # noqa: UP045  # null: "study"
    storage: Optional[str] = None  # noqa: UP045  # any database URL; null: sqlite:///<sweep dir>/optuna.db
    n_trials: int = 20  # finished trials the study should hold; a resumed study runs the rest
    n_jobs: int = 1  # trials handed to the launcher at once (parallel with a parallel launcher)
    params: Optional[dict[str, Any]] = None  # noqa: UP045  # the search space: name -> override string or mapping
    custom_search_space: Optional[str] = None  # noqa: UP045  # a function(cfg, trial) that suggests more params
    heartbeat_interval: int = 30  # seconds between a running trial's heartbeats (database storages)
    grace_period: Optional[int] = None  # noqa: UP045  # seconds without one before the trial is FAIL; null: 2 x interval


def register() -> None:
    """Put the sweeper, its samplers and its pruners into Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(
        group="hydra/sweeper",
        name="rnnlab_optuna",
        node=RnnlabOptunaSweeperConf,
        provider="rnnlab_optuna_sweeper",
    )
    for name, node in SAMPLERS.items():
        cs.store(
            group="hydra/sweeper/sampler", name=name, node=node, provider="rnnlab_optuna_sweeper"
        )
    for name, node in PRUNERS.items():
        cs.store(
            group="hydra/sweeper/pruner", name=name, node=node, provider="rnnlab_optuna_sweeper"
        )


register()
