"""``resume=RUN_DIR``: continue a run in its own directory, exactly where its last checkpoint
left it, with its own command line (``RUN_DIR/.hydra/overrides.yaml``) and what is typed now
on top. The command line is expanded before Hydra composes it, so nothing is written until
the resume is known to be valid; the TensorBoard run stays one value per step.
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from cifar_lightning.atomic import atomic_write
from cifar_lightning.errors import CheckpointError, ConfigError, RunInterrupted
from cifar_lightning.run import sweep_resume
from cifar_lightning.run.checkpoints import RECORD_KEY, check_resumable, read_checkpoint
from cifar_lightning.run.config import parse_overrides
from cifar_lightning.training.callbacks.interrupt import CheckpointOnInterrupt

log = logging.getLogger(__name__)

RESUME_KEYS = ("resume", "ckpt_path", "hydra.run.dir")


def override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``; ``~a`` -> ``a``; ``model=x`` -> ``model``."""
    found = parse_overrides([override])
    return found[0].key_or_group if found else override


def _value(args: Sequence[str], key: str) -> Any:
    found = [o for o in parse_overrides(args) if o.key_or_group == key and not o.is_delete()]
    return found[-1].value() if found else None


def _quote(path: Path) -> str:
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def newest_run_with_checkpoint(output_root: Path) -> Path | None:
    candidates = list(output_root.glob("**/checkpoints/last.ckpt"))
    newest = max(candidates, key=lambda p: p.stat().st_mtime, default=None)
    return newest.parent.parent if newest else None


def expand_argv(args: list[str]) -> list[str]:
    """The command line with ``resume=RUN_DIR`` expanded (checked to be a run); unchanged
    without it."""
    resume = _value(args, "resume")
    ckpt_path = _value(args, "ckpt_path")
    if resume is None:
        if ckpt_path == "last":
            root = Path(_value(args, "paths.output_root") or "outputs")
            newest = newest_run_with_checkpoint(root)
            raise ConfigError(
                "ckpt_path=last needs the run to continue.",
                fix=f"add resume=RUN_DIR, e.g. resume={newest} (the newest run with a last.ckpt)"
                if newest
                else f"add resume=RUN_DIR; no run under {root}/ has a checkpoints/last.ckpt",
            )
        return args
    if sweep_resume.is_sweep_dir(Path(resume).expanduser()):  # -m or not: the whole sweep
        return sweep_resume.expand_argv(args, Path(resume).expanduser())
    if any(a in ("-m", "--multirun") for a in args):
        raise ConfigError(
            f"-m resume={resume}: that is not a sweep directory (it has no "
            f"{sweep_resume.SWEEP_FILE}).",
            fix="pass the directory the sweep printed (outputs/multirun/<date>/<time>), or "
            "drop -m to continue one run",
        )
    if _value(args, "hydra.run.dir") is not None:
        raise ConfigError(
            "resume= continues the run in its own directory; hydra.run.dir cannot be set too.",
            fix="drop hydra.run.dir",
        )
    run_dir = Path(resume).expanduser()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not run_dir.is_dir():
        raise ConfigError(
            f"resume={resume}: no such directory.",
            fix="pass a run directory, e.g. resume=outputs/<date>/<time>",
        )
    if not overrides_file.is_file():
        raise ConfigError(
            f"resume={resume} is not a run directory (it has no .hydra/overrides.yaml).",
            fix="pass the directory of one run, e.g. resume=outputs/<date>/<time>",
        )
    try:
        original = yaml.safe_load(overrides_file.read_text()) or []
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {overrides_file} ({e}).") from None
    given = {override_key(a) for a in args if not a.startswith("-")}
    kept = [o for o in original if override_key(o) not in given | set(RESUME_KEYS)]
    return [*kept, *args, f"hydra.run.dir={_quote(run_dir.resolve())}"]


def resume_checkpoint(run_dir: Path, ckpt_path: str | None) -> Path:
    last = ckpt_path in (None, "null", "last")
    return run_dir / "checkpoints" / "last.ckpt" if last else Path(ckpt_path).expanduser()


def checkpoint_to_load(cfg: DictConfig, model: torch.nn.Module) -> str | None:
    """The checkpoint ``fit`` continues from, checked against the model; None for a fresh run."""
    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if resume:
        path = resume_checkpoint(Path(cfg.paths.output_dir), ckpt_path)
    elif ckpt_path == "last":
        raise ConfigError("ckpt_path=last needs the run to continue.", fix="add resume=RUN_DIR")
    elif ckpt_path:
        path = Path(ckpt_path).expanduser()
    else:
        return None
    checkpoint = read_checkpoint(path)
    check_resumable(checkpoint, path, model)
    check_same_run(checkpoint, path, cfg)
    step = checkpoint["global_step"]
    log.info("Resuming from %s (epoch %s, step %s).", path, checkpoint["epoch"], step)
    return str(path)


# What a continued run must keep (its checkpoint's state belongs to them), and its length
# (a schedule was laid out for it); trainer limits, logging and workers may change.
FIXED = ("seed", "optim", "sched", "aug", "loss", "mix", "ema", "trainer.accumulate_grad_batches")
FIXED += tuple(f"data.{k}" for k in ("source", "root", "classes", "val_size", "split_seed"))
FIXED += ("data.shuffle_seed", "data.batch_size", "model")  # model: its own keys, checked last
LENGTH = ("trainer.max_epochs", "trainer.max_steps", "trainer.limit_train_batches")


def _select(config: Any, key: str) -> Any:
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def check_same_run(checkpoint: dict[str, Any], path: Path, cfg: DictConfig) -> None:
    """Refuse a config that would make the checkpoint's run another run: it would fail deep
    in Lightning, or silently train something that is neither (a schedule laid out for the
    old length, one-cycle refusing to step past its end)."""
    recorded = (checkpoint.get(RECORD_KEY) or {}).get("config")
    if not recorded:
        return
    current = without_unrecorded_defaults(OmegaConf.to_container(cfg, resolve=True), recorded)
    scheduled = bool(_select(current, "sched.scheduler"))
    for section in (LENGTH if scheduled else ()) + FIXED:
        old, new = _select(recorded, section), _select(current, section)
        if old != new:
            key, old, new = _first_difference(section, old, new)
            why = (
                "its learning-rate schedule was laid out for the original length"
                if key in LENGTH
                else "the checkpoint's weights, optimizer state and data order belong to it"
            )
            raise ConfigError(
                f"{path} cannot continue with {key} changed ({_short(old)} -> {_short(new)}): "
                f"{why}.",
                fix=f"drop the {key} override to continue the run as it was"
                + (", or use sched=none / sched=step to extend a run" if key in LENGTH else "")
                + "; or start a new run",
            )


# Keys newer than some runs, and the test that they are off: a run recorded without them had
# them off, and continues as it was while they stay off.
ADDED = {
    "mix": lambda v: v.get("mode") == "none",
    "model.mix": lambda v: v.get("mode") == "none",
    "ema": lambda v: not v.get("enabled"),
}


def without_unrecorded_defaults(current: dict[str, Any], recorded: dict[str, Any]) -> dict:
    """``current`` less the keys of :data:`ADDED` that ``recorded`` lacks and that are off."""
    for key, off in ADDED.items():
        *parents, name = key.split(".")
        recorded_parent = _select(recorded, ".".join(parents)) if parents else recorded
        parent = _select(current, ".".join(parents)) if parents else current
        if not isinstance(parent, dict) or not isinstance(recorded_parent, dict):
            continue
        if name not in recorded_parent and isinstance(parent.get(name), dict) and off(parent[name]):
            del parent[name]
    return current


def _first_difference(key: str, old: Any, new: Any) -> tuple[str, Any, Any]:
    """``model`` {dropout: 0.05} vs {dropout: 0.5} -> ("model.dropout", 0.05, 0.5)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return _first_difference(f"{key}.{k}", old.get(k), new.get(k))
    return key, old, new


def _short(value: Any) -> str:
    return str(value) if len(str(value)) <= 60 else str(value)[:57] + "..."


def check_before_run(cfg: DictConfig) -> None:
    """For ``resume=``: the checkpoint is sound and fits the config, before Hydra writes."""
    if not cfg.get("resume"):
        return
    run_dir = Path(cfg.resume).expanduser()
    path = resume_checkpoint(run_dir, cfg.get("ckpt_path"))
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointError as error:
        others = sorted(p for p in (run_dir / "checkpoints").glob("*.ckpt") if p != path)
        if others:
            error.fix = (
                f"continue from another of the run's checkpoints: resume={cfg.resume} "
                f"ckpt_path={others[-1]}"
            )
        raise
    check_same_run(checkpoint, path, cfg)


def _session(path: Path) -> str:
    """``events.out.tfevents.<time>.<host>.<pid>.<n>``: one process writes one session's files."""
    parts = path.name.split(".")
    return ".".join(parts[4:-1]) if len(parts) >= 7 else path.name


def _first_wall_time(path: Path) -> float:
    for record in RawEventFileLoader(str(path)).Load():
        return event_pb2.Event.FromString(record).wall_time
    return math.inf


def drop_superseded_events(log_dir: str | Path) -> int:
    """Remove events that a later session of the same run logged again; returns how many.

    When a session (each resume is one) logs a tag from step ``s`` on, earlier sessions'
    events of that tag at steps >= ``s`` are what a crash left after the last checkpoint.
    TensorBoard's "purge orphaned data" rule, applied to the files themselves (``purge_step``
    only hides them from TensorBoard's own reader), so every reader sees one value per step.
    The newest session's files, maybe still open, are never touched.
    """
    files = sorted(Path(log_dir).glob("events.out.tfevents.*"), key=_first_wall_time)
    sessions: dict[str, list[Path]] = {}
    for path in files:
        sessions.setdefault(_session(path), []).append(path)
    dropped = 0
    later_first_step: dict[str, int] = {}  # tag -> first step any later session logged it at
    for session_files in reversed(list(sessions.values())):
        first_step: dict[str, int] = {}
        for path in session_files:
            events = [event_pb2.Event.FromString(r) for r in RawEventFileLoader(str(path)).Load()]
            kept, changed = [], False
            for event in events:
                values = list(event.summary.value) if event.HasField("summary") else []
                for value in values:
                    first_step[value.tag] = min(first_step.get(value.tag, event.step), event.step)
                live = [v for v in values if event.step < later_first_step.get(v.tag, math.inf)]
                if len(live) < len(values):
                    changed = True
                    dropped += len(values) - len(live)
                    if not live:
                        continue
                    del event.summary.value[:]
                    event.summary.value.extend(live)
                kept.append(event)
            if changed:
                _rewrite(path, kept)
        for tag, step in first_step.items():
            later_first_step[tag] = min(later_first_step.get(tag, step), step)
    if dropped:
        log.info("TensorBoard: dropped %d values superseded by a resumed session.", dropped)
    return dropped


def _rewrite(path: Path, events: list[event_pb2.Event]) -> None:
    def write(f) -> None:
        writer = RecordWriter(f)
        for event in events:
            writer.write(event.SerializeToString())

    atomic_write(path, write)


def command(cfg: DictConfig) -> str:
    """The command that continues this run; in a sweep, the whole sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"python -m cifar_lightning.train -m resume={HydraConfig.get().sweep.dir}"
    return f"python -m cifar_lightning.train resume={cfg.paths.output_dir}"


def interruption(cfg: DictConfig, trainer: L.Trainer) -> RunInterrupted | None:
    """After ``fit``: the SIGTERM/Ctrl-C that stopped it, if one did, saying how to go on."""
    interrupt = next((c for c in trainer.callbacks if isinstance(c, CheckpointOnInterrupt)), None)
    signum = interrupt.signal if interrupt is not None else None
    if not (signum or trainer.received_sigterm):
        return None
    signum = signum or signal.SIGTERM
    saved = interrupt.saved_path if interrupt is not None else None
    where = (
        f"{saved} holds step {interrupt.saved_step}"
        if saved
        else "nothing was saved on the way out; the last periodic checkpoint is kept"
    )
    return RunInterrupted(
        f"training stopped on {signal.Signals(signum).name} at step {trainer.global_step} "
        f"(epoch {trainer.current_epoch}); {where}.",
        fix=f"continue it with: {command(cfg)}",
        signum=signum,
    )
