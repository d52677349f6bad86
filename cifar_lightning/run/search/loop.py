"""The search itself: ask the study for a batch of trials, launch them as jobs through
whatever Hydra launcher the command picked, tell the study how each ended, and write the
best trial. Each job is an ordinary training run in its own numbered directory."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from cifar_lightning.atomic import atomic_write
from cifar_lightning.errors import ConfigError, UserError
from cifar_lightning.run.search import space as search_space
from cifar_lightning.run.search.storage import (
    default_url,
    journal_path,
    open_storage,
    sqlite_path,
)
from cifar_lightning.run.search.study import direction, make_pruner, make_sampler, open_study

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
# Each trial's user attributes: the sweep dir and job that ran it (a continued sweep counts
# and cleans up its own trials only, the study may be shared), and whether it was cut off.
SWEEP_DIR_ATTR, JOB_ATTR, INTERRUPTED_ATTR = "sweep_dir", "job", "interrupted"


@dataclass
class Settings:
    """``hydra.sweeper.*`` (conf/hydra/sweeper/optuna.yaml), resolved."""

    direction: str = "maximize"
    study_name: str | None = None
    storage: str | None = None
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 1.0
    pruner: str | None = "median"
    pruning: Mapping[str, Any] | None = None
    sampler: DictConfig | None = None
    params: Mapping[str, Any] | None = None


def absolute(url: str) -> str:
    """File storages with an absolute path: jobs may start in another directory."""
    if (path := journal_path(url)) is not None:
        return f"journal:{path.resolve()}"
    if (path := sqlite_path(url)) is not None:
        return f"sqlite:///{path.resolve()}"
    return url


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def trial_override(trial: optuna.Trial, study_name: str, storage: str) -> str:
    """Tells the job which trial it is, so it can report to the study (run/search/pruning.py).
    A hydra.* override: it is not one of the run's own overrides in metrics.json."""
    return (
        f"hydra.sweeper.trial={{id:{trial._trial_id},number:{trial.number},"
        f"study_name:{_quoted(study_name)},storage:{_quoted(storage)}}}"
    )


class Search:
    """One ``-m hparams_search=optuna`` command: checks everything, then runs the trials."""

    def __init__(
        self,
        settings: Settings,
        config: DictConfig,
        launcher: Launcher,
        validate: Callable[[Sequence[Sequence[str]]], None],
    ) -> None:
        self.settings, self.config, self.launcher = settings, config, launcher
        self.validate = validate  # composes each job's config, as the launcher will
        self.metric = str(config.get("optimized_metric"))

    def run(self, arguments: Sequence[str]) -> list[JobReturn]:
        s = self.settings
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        goal = direction(s.direction)
        space = search_space.parse(s.params, arguments)
        if int(s.n_trials) < 1 or int(s.n_jobs) < 1:
            raise ConfigError(
                f"hydra.sweeper.n_trials={s.n_trials}, n_jobs={s.n_jobs}: both must be 1 or more.",
                "e.g. hydra.sweeper.n_trials=20",
            )
        # A key no run has, a value its config refuses: one message now, not n_trials failures.
        self.validate([space.overrides(space.example())])
        pruner = make_pruner(s.pruner, s.pruning)
        sampler = make_sampler(s.sampler)
        storage = open_storage(s.storage, sweep_dir)
        url = absolute(str(s.storage or default_url(sweep_dir)))
        name = str(s.study_name or "cifar-lightning")
        study = open_study(storage, name, goal, sampler, pruner, url)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper does
        log.info(
            "Study %r in %s (%s, sampler %s, pruner %s): %d trials, %d at a time.",
            name, url, goal, type(sampler).__name__, s.pruner, s.n_trials, s.n_jobs,
        )  # fmt: skip
        for key, dist in space.distributions.items():
            log.info("  %s: %s", key, dist)

        returns: list[JobReturn] = []
        mine = str(sweep_dir.resolve())
        requeue_interrupted(study, mine, self.metric)  # a killed session's trials of this sweep dir
        finished = len(finished_trials(study, mine))
        if finished:
            log.info("This sweep has %d of its %d trials already.", finished, s.n_trials)
        next_job, remaining = self._first_job_number(sweep_dir), int(s.n_trials) - finished
        while remaining > 0:
            # Trials cut off in an earlier session go first, in a batch of their own: the
            # batches after it then see the trials an uninterrupted sweep's saw.
            batch = min(int(s.n_jobs), remaining, retries_waiting(study, mine) or remaining)
            position = len(finished_trials(study))
            trials = [self._ask(study, space, position + i) for i in range(batch)]
            for i, trial in enumerate(trials):
                trial.set_user_attr(SWEEP_DIR_ATTR, mine)
                trial.set_user_attr(JOB_ATTR, next_job + i)
            overrides = [[*space.overrides(t.params), trial_override(t, name, url)] for t in trials]
            try:
                done = self.launcher.launch(overrides, initial_job_idx=next_job)
            except BaseException:  # SIGTERM / Ctrl-C stopped the sweep (run/sweeps.py)
                requeue_interrupted(study, mine, self.metric)
                raise
            failures = [self._tell(study, t, r) for t, r in zip(trials, done, strict=True)]
            returns.extend(done)
            next_job, remaining = next_job + batch, remaining - batch
            self._stop_if_failing([f for f in failures if f is not None], batch)
        self._write_best(study, sweep_dir)
        return returns

    def _ask(self, study: optuna.Study, space: Any, position: int) -> optuna.Trial:
        """The study's trial at ``position`` (finished trials before it), from a sampler
        seeded with ``seed + position``: the proposal depends on the seed, the position and
        the finished trials only, so a search continued after a kill proposes what the
        uninterrupted one did. (One sampler kept for the search would carry its random state,
        which no storage keeps.) Without a seed the sampler is left as it is."""
        node = self.settings.sampler
        if node is not None and node.get("seed") is not None:
            study.sampler = make_sampler(OmegaConf.merge(node, {"seed": int(node.seed) + position}))
        return study.ask(space.distributions)

    @staticmethod
    def _first_job_number(sweep_dir: Path) -> int:
        """After the jobs already in the sweep dir (hydra.sweep.dir pointed at an earlier
        search): new trials get new directories instead of overwriting earlier ones."""
        numbers = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        return max(numbers, default=-1) + 1

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> str | None:
        """Tell the study how the job ended; returns its error when it failed."""
        outcome = ret._return_value  # return_value itself raises (and prints) a failure
        if ret.status == JobStatus.COMPLETED and _finite(outcome):
            study.tell(trial, float(outcome))
            log.info("Trial %d: %s", trial.number, outcome)
            return None
        if isinstance(outcome, optuna.TrialPruned):
            study.tell(trial, state=TrialState.PRUNED)
            log.info("Trial %d: %s", trial.number, outcome)
            return None
        if ret.status == JobStatus.COMPLETED:
            error = f"it returned {outcome!r}, not a number (optimized_metric)"
        else:
            error = f"{type(outcome).__name__}: {outcome}"
        study.tell(trial, state=TrialState.FAIL)
        log.warning("Trial %d failed: %s", trial.number, error)
        return error

    def _stop_if_failing(self, failures: list[str], batch: int) -> None:
        rate = len(failures) / batch
        if failures and rate > float(self.settings.max_failure_rate):
            raise UserError(
                f"the search stopped: {len(failures)} of {batch} trials of the last batch "
                f"failed, more than hydra.sweeper.max_failure_rate="
                f"{self.settings.max_failure_rate} allows. First error: {failures[0]}",
                "fix the failing trials (see their metrics.json), or raise "
                "hydra.sweeper.max_failure_rate",
            )

    def _write_best(self, study: optuna.Study, sweep_dir: Path) -> None:
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        if not counts["complete"]:
            raise UserError(
                f"no trial of the study {study.study_name!r} completed "
                f"({counts['fail']} failed, {counts['pruned']} pruned), so there is no best one.",
                "see the errors in the trials' metrics.json (python -m cifar_lightning.report "
                f"{sweep_dir})",
            )
        best = study.best_trial
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "best_trial": best.number,
            "best_params": best.params,
            "best_value": best.value,
            "trials": {k: v for k, v in counts.items() if v},
        }
        atomic_write(sweep_dir / RESULTS_FILE, yaml.safe_dump(results, sort_keys=False).encode())
        log.info("Best parameters: %s", best.params)
        log.info("Best value: %s (trial %d)", best.value, best.number)


def finished_trials(
    study: optuna.Study, sweep_dir: str | None = None
) -> list[optuna.trial.FrozenTrial]:
    """The trials ``sweep_dir`` (None: any) ran to an end: completed, pruned, or failed by
    themselves (not those a kill or SIGTERM cut off, which are re-queued). ``n_trials``
    counts these."""
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if (sweep_dir is None or t.user_attrs.get(SWEEP_DIR_ATTR) == sweep_dir)
        and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        and not t.user_attrs.get(INTERRUPTED_ATTR)
    ]


def retries_waiting(study: optuna.Study, sweep_dir: str) -> int:
    """This sweep's cut-off trials queued again (:func:`requeue_interrupted`), not yet run."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return sum(t.user_attrs.get(SWEEP_DIR_ATTR) == sweep_dir for t in waiting)


def _recorded_outcome(sweep_dir: str, job: Any, metric: str) -> tuple[TrialState, Any] | None:
    """How the job's ``metrics.json`` says a trial ended that the study was never told of (a
    batch the sweep's SIGTERM cut short after some of its jobs had finished)."""
    path = Path(sweep_dir) / str(job) / "metrics.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    value = record.get("metrics", {}).get(metric)
    if record.get("status") == "completed" and _finite(value):
        return TrialState.COMPLETE, float(value)
    if record.get("status") == "pruned":
        return TrialState.PRUNED, None
    return None


def requeue_interrupted(study: optuna.Study, sweep_dir: str, metric: str) -> int:
    """Trials of ``sweep_dir`` left ``RUNNING`` (its process was killed, or SIGTERM stopped
    the sweep) are marked failed, which is what they are to the sampler (no value), and their
    parameters queued again, so the sweep's next session tries them first. Marked, not left
    RUNNING: a RUNNING trial would count as in progress forever (report, pruners' medians).
    Only this sweep dir's own trials: others sharing the study may be running now."""
    storage = study._storage
    cut_off = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get(SWEEP_DIR_ATTR) == sweep_dir
    ]
    for trial in cut_off:
        outcome = _recorded_outcome(sweep_dir, trial.user_attrs.get(JOB_ATTR), metric)
        if outcome is not None:  # it did end; the study was not told
            study.tell(trial.number, outcome[1], state=outcome[0])
            continue
        storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        retry = {"retry_of": trial.number, SWEEP_DIR_ATTR: sweep_dir}
        study.enqueue_trial(trial.params, user_attrs=retry)
        log.warning(
            "Trial %d (job %s) was cut off: marked failed, its parameters queued again.",
            trial.number, trial.user_attrs.get(JOB_ATTR),
        )  # fmt: skip
    return len(cut_off)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def settings(kwargs: Mapping[str, Any]) -> Settings:
    """The sweeper's constructor arguments as :class:`Settings` (unknown keys: a ConfigError)."""
    known = Settings.__dataclass_fields__
    unknown = sorted(set(kwargs) - set(known) - {"trial"})
    if unknown:
        raise ConfigError(
            f"hydra.sweeper has no option {', '.join(unknown)}.",
            f"the options are: {', '.join(known)} (conf/hydra/sweeper/optuna.yaml)",
        )
    values = {k: v for k, v in kwargs.items() if k in known}
    for key in ("params", "pruning"):
        if isinstance(values.get(key), DictConfig):
            values[key] = OmegaConf.to_container(values[key], resolve=True)
    return Settings(**values)
