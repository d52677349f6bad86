"""A finished (or running, or crashed) search as ``report`` shows it: the study its jobs
reported to, its best trial, and Optuna's own plots of it (optimization history, parameter
importances) made with matplotlib."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from cifar_lightning.run.search.storage import open_storage, shown
from cifar_lightning.training import figures

log = logging.getLogger(__name__)


@dataclass
class SearchSummary:
    study: optuna.Study
    storage: str  # as shown: password hidden
    # job directory of each trial number, for the trials these runs were
    jobs: dict[int, Path] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        trials = self.study.get_trials(deepcopy=False)
        return {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState if any(
            t.state == s for t in trials)}  # fmt: skip

    def best(self) -> optuna.trial.FrozenTrial | None:
        try:
            return self.study.best_trial
        except ValueError:  # no trial completed
            return None


def trial_of(run: Path) -> dict[str, Any] | None:
    """The ``hydra.sweeper.trial`` a job of our sweeper was given (id, number, study, storage)."""
    path = run / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    try:
        trial = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.trial")
    except Exception:
        return None
    return OmegaConf.to_container(trial) if trial else None


def find(runs: list[Path]) -> SearchSummary | None:
    """The study the runs were trials of (the first one's, if several); None if none was."""
    trials = {run: t for run in runs if (t := trial_of(run))}
    if not trials:
        return None
    first = next(iter(trials.values()))
    try:
        storage = open_storage(first["storage"])
        study = optuna.load_study(study_name=first["study_name"], storage=storage)
    except Exception as e:  # the database moved or is down: the table still stands
        log.warning("Cannot open the study %r: %s", first["study_name"], e)
        return None
    jobs = {
        int(t["number"]): run
        for run, t in trials.items()
        if t["study_name"] == first["study_name"] and t["storage"] == first["storage"]
    }
    return SearchSummary(study, shown(first["storage"]), jobs)


def plots(summary: SearchSummary, out_dir: Path) -> dict[str, Path | str]:
    """``search_history.png`` and ``search_importance.png``; where one cannot be made (too
    few completed trials), the reason instead of its path."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    made: dict[str, Path | str] = {}
    makers = {
        "history": (optuna_plots.plot_optimization_history, 1),
        "importance": (optuna_plots.plot_param_importances, 2),
    }
    complete = summary.counts().get("complete", 0)
    for name, (plot, needed) in makers.items():
        if complete < needed:
            made[name] = f"needs {needed} completed trials, the study has {complete}"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ax = plot(summary.study)
        ax.figure.tight_layout()  # Optuna's labels and legend otherwise spill off the canvas
        made[name] = figures.save_png(ax.figure, out_dir / f"search_{name}.png")
        plt.close(ax.figure)
    return made
