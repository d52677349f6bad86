"""The Hydra side of the Optuna search: Hydra finds sweepers only in the ``hydra_plugins``
namespace, so this thin class lives here and the search itself in
``cifar_lightning.run.search`` (the run layer). Configured by conf/hydra/sweeper/optuna.yaml.
"""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Asks Optuna (>= 4) for trials, runs them through the configured launcher, tells it
    how they ended; prunes, stores and continues studies (README "Hyperparameter search")."""

    def __init__(self, **kwargs: Any) -> None:
        # Imported here: Hydra imports every plugin module on every command, and a single
        # training run should not wait for Optuna and SQLAlchemy.
        from cifar_lightning.run.search.loop import settings

        self.settings = settings(kwargs)
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from cifar_lightning.run.search.loop import Search

        assert self.config is not None and self.launcher is not None
        search = Search(self.settings, self.config, self.launcher, self.validate_batch_is_legal)
        return search.run(arguments)
