"""Continue a sweep in its own directory: ``-m resume=SWEEP_DIR`` (or the sweep's command again
with ``hydra.sweep.dir=SWEEP_DIR``).

Three places take part, each where Hydra lets it:
- the command line: ``resume=SWEEP_DIR`` becomes the sweep's own overrides, read from its
  ``multirun.yaml`` (:func:`expand_argv`), before Hydra composes anything;
- the sweep, before its first job (a Hydra callback, run/checks.py): a sweep dir that holds a
  sweep of other overrides is refused, since job N must stay the same override set
  (:func:`check_same_sweep`);
- each job, in its directory (:func:`continue_job`): skip it if it completed, continue it from
  ``last.ckpt`` if it was interrupted or killed, run it again if it failed.
An Optuna search continues its study to ``n_trials`` instead (run/search/loop.py).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from cifar_lightning.errors import ConfigError
from cifar_lightning.run.config import parse_overrides

log = logging.getLogger(__name__)

SWEEP_FILE = "multirun.yaml"
METRICS_FILE = "metrics.json"  # run/record.py's, without importing torch and Lightning here
# A job whose record says so is done; its result is read back, not trained again.
FINISHED = ("completed", "pruned")
# Hydra adds these itself, or the resume sets them.
NOT_REPEATED = ("hydra.mode", "hydra.sweep.dir", "resume", "ckpt_path")
FAILED_ATTEMPTS = ".failed"


def _key(override: str) -> str:
    found = parse_overrides([override])
    return found[0].key_or_group if found else override


def _quote(path: Path) -> str:
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def is_sweep_dir(path: Path) -> bool:
    return (path / SWEEP_FILE).is_file()


def recorded_overrides(sweep_dir: Path) -> tuple[list[str], list[str]]:
    """The sweep's ``hydra.*`` and task overrides, as its command line gave them."""
    path = sweep_dir / SWEEP_FILE
    try:
        overrides = OmegaConf.load(path).hydra.overrides
        return list(overrides.hydra), list(overrides.task)
    except Exception as e:  # unreadable, or not one a sweep wrote
        raise ConfigError(
            f"cannot read the sweep's overrides from {path} ({str(e).splitlines()[0]}).",
            fix="pass the directory a sweep wrote, e.g. resume=outputs/multirun/<date>/<time>",
        ) from None


def expand_argv(args: Sequence[str], sweep_dir: Path) -> list[str]:
    """``-m resume=SWEEP_DIR [more]`` -> the sweep's own command line, ``more`` on top, in
    ``SWEEP_DIR``. Task overrides added now that change the jobs are refused later, by
    :func:`check_same_sweep`; ``hydra.*`` ones (launcher, ``n_trials``) apply."""
    hydra_overrides, task = recorded_overrides(sweep_dir)
    flags = [a for a in args if a.startswith("-") and a not in ("-m", "--multirun")]
    given = [a for a in args if not a.startswith("-") and _key(a) not in NOT_REPEATED]
    keys = {_key(a) for a in given}
    kept = [o for o in hydra_overrides + task if _key(o) not in keys | set(NOT_REPEATED)]
    return ["-m", *flags, *kept, *given, f"hydra.sweep.dir={_quote(sweep_dir.resolve())}"]


def check_same_sweep(config: DictConfig) -> None:
    """Before a sweep's first job: a sweep dir that already holds a sweep continues it, which
    only makes sense with the same task overrides (they make job N what it is)."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    if not is_sweep_dir(sweep_dir):
        return
    _, before = recorded_overrides(sweep_dir)
    now = [str(o) for o in config.hydra.overrides.task]
    if now != before:
        added = [o for o in now if o not in before]
        dropped = [o for o in before if o not in now]
        what = "; ".join(
            part
            for part in (
                f"added {' '.join(added)}" if added else "",
                f"dropped {' '.join(dropped)}" if dropped else "",
            )
            if part
        )
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} holds a sweep of other overrides "
            f"({what or 'in another order'}); continuing it would mix two sweeps' jobs.",
            fix=f"continue it as it was: python -m cifar_lightning.train -m resume={sweep_dir}; "
            "or give this sweep a new hydra.sweep.dir",
        )
    log.info("Continuing the sweep in %s (jobs that completed are not run again).", sweep_dir)


def _read_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"status": "unreadable"}  # a torn write: run the job again


def continue_job(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any] | None:
    """What an earlier session of this sweep left in the job's directory decides what to do:

    - ``completed`` (or ``pruned``): nothing; returns its record, whose result stands;
    - ``interrupted``, or no record but a ``last.ckpt`` (killed): continue from ``last.ckpt``
      exactly, as ``resume=`` does a single run (sets ``cfg.resume``);
    - ``failed`` (or an unreadable record): train again from the start, the failed attempt
      moved to ``.failed/<n>/`` in the job's directory;
    - nothing: a new job.
    Returns None when the job is to be trained.
    """
    run_dir = Path(cfg.paths.output_dir)
    record = _read_record(run_dir)
    status = (record or {}).get("status")
    recorded = (record or {}).get("overrides")
    if record is not None and recorded is not None and list(recorded) != list(overrides):
        raise ConfigError(
            f"{run_dir} holds a run of other overrides ({' '.join(recorded)}).",
            fix="continue a sweep with its own overrides (-m resume=SWEEP_DIR), or use a new "
            "hydra.sweep.dir",
        )
    if status in FINISHED:
        log.info("Job %s %s in an earlier session: not run again.", run_dir.name, status)
        return record
    last = run_dir / "checkpoints" / "last.ckpt"
    if status in (None, "interrupted") and last.is_file():
        log.info("Job %s continues from %s.", run_dir.name, last)
        with open_dict(cfg):
            cfg.resume = str(run_dir)
            cfg.ckpt_path = None
        return None
    if status is not None:
        moved = set_aside(run_dir)
        log.info("Job %s %s in an earlier session (kept in %s): run again.", run_dir.name,
                 status, moved)  # fmt: skip
    return None


def set_aside(run_dir: Path) -> Path:
    """Move a failed attempt's results out of the way of the next one (its checkpoints would
    compete for "best", its events with the new curves), into ``.failed/<n>/``; Hydra's
    ``.hydra/`` and the open log stay."""
    attempts = run_dir / FAILED_ATTEMPTS
    n = sum(1 for _ in attempts.iterdir()) if attempts.is_dir() else 0
    target = attempts / str(n)
    target.mkdir(parents=True)
    for path in run_dir.iterdir():
        if path.name not in (".hydra", FAILED_ATTEMPTS) and path.suffix != ".log":
            shutil.move(str(path), target / path.name)
    return target
