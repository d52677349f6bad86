"""The study a search adds trials to: its direction, sampler and pruner, created or continued
in its storage, and refused (before any trial runs) when it cannot be what the command asks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner
from optuna.storages import BaseStorage
from optuna.study import StudyDirection

from cifar_lightning.errors import ConfigError

PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("maximize", "minimize")


def direction(value: Any) -> str:
    text = str(value).lower()
    if text not in DIRECTIONS:
        raise ConfigError(
            f"hydra.sweeper.direction={value} is not a direction.",
            "use hydra.sweeper.direction=maximize (accuracy) or minimize (a loss)",
        )
    return text


def make_pruner(name: Any, pruning: Mapping[str, Any] | None) -> BasePruner:
    """``median``: stop a trial whose metric is below the median of earlier trials at the same
    epoch, once ``startup_trials`` trials have finished; ``hyperband``: successive halving over
    epochs; ``none``: every trial runs to the end. No trial is pruned in ``warmup_epochs``."""
    options = dict(pruning or {})
    startup = int(options.get("startup_trials", 5))
    warmup = int(options.get("warmup_epochs", 1))
    chosen = "none" if name in (None, False) else str(name).lower()
    if chosen == "median":
        return MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if chosen == "hyperband":
        return HyperbandPruner(min_resource=max(1, warmup))
    if chosen == "none":
        return NopPruner()
    raise ConfigError(
        f"hydra.sweeper.pruner={name} is not a pruner.",
        f"use one of: {', '.join(f'hydra.sweeper.pruner={p}' for p in PRUNERS)}",
    )


def make_sampler(node: DictConfig | Mapping[str, Any] | None) -> optuna.samplers.BaseSampler:
    """``hydra/sweeper/sampler=tpe|random|cmaes`` (conf/hydra/sweeper/sampler/)."""
    if not node:
        return optuna.samplers.TPESampler()
    config = node if isinstance(node, DictConfig) else OmegaConf.create(dict(node))
    try:
        return instantiate(config)
    except Exception as e:  # a missing optional package (cmaes) or a bad argument
        cause = str(e.__cause__ or e).strip().splitlines()[0]
        raise ConfigError(
            f"cannot make the sampler {config.get('_target_')}: {cause}",
            "check hydra.sweeper.sampler.* (conf/hydra/sweeper/sampler/)",
        ) from None


def open_study(
    storage: BaseStorage,
    name: str,
    goal: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: BasePruner,
    shown_storage: str,
) -> optuna.Study:
    """Create the study, or continue the one of that name if it optimizes the same way."""
    existing = {s.study_name: s for s in storage.get_all_studies()}
    if name in existing:
        old = existing[name].directions
        if old != [StudyDirection.MAXIMIZE if goal == "maximize" else StudyDirection.MINIMIZE]:
            was = ", ".join(d.name.lower() for d in old)
            raise ConfigError(
                f"the study {name!r} in {shown_storage} already exists and is set to {was}, "
                f"but this search asks to {goal}.",
                f"use hydra.sweeper.direction={was} to continue it, or a new "
                "hydra.sweeper.study_name",
            )
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction=goal,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
