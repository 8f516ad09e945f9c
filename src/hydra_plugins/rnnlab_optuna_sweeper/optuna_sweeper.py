"""The Hydra Sweeper plugin class; Optuna is imported only when a sweep starts."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from . import config as _config  # noqa: F401  (registers the configs with Hydra)


class RnnlabOptunaSweeper(Sweeper):
    """Runs an Optuna study through Hydra's launcher: one Hydra job per trial."""

    def __init__(
        self,
        sampler: Any = None,
        pruner: Any = None,
        direction: Any = None,
        study_name: str | None = None,
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        params: Any = None,
        custom_search_space: str | None = None,
        heartbeat_interval: int = 30,
        grace_period: int | None = None,
    ) -> None:
        from ._impl import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            study_name=study_name,
            storage=storage,
            n_trials=n_trials,
            n_jobs=n_jobs,
            params=params,
            custom_search_space=custom_search_space,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep the context and build the launcher that runs the trials."""
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        """Run the study; returns the study."""
        return self.sweeper.sweep(arguments)
