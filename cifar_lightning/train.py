"""``python -m cifar_lightning.train``: compose the config, train, test, write ``metrics.json``.

The ``@hydra.main`` wrapper is thin on purpose: :func:`train` takes a composed config and
returns the run's results, so tests (and sweepers, notebooks, other tools) call it directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from lightning.pytorch.callbacks import Callback, ModelSummary, ProgressBar
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cifar_lightning import log_filters, resume, sweeps, timing, tune, validation
from cifar_lightning.callbacks import CheckpointOnInterrupt
from cifar_lightning.checkpoints import SafeCheckpointIO
from cifar_lightning.configs import CONFIG_DIR, build, register_resolvers
from cifar_lightning.data import batched_aug
from cifar_lightning.distributed import check_launch
from cifar_lightning.errors import (
    ConfigError,
    RunInterrupted,
    TrainingDiverged,
    UserError,
    exit_on_user_error,
)
from cifar_lightning.hparams_log import log_config_and_metrics
from cifar_lightning.models.base import ImageClassifier
from cifar_lightning.run_record import RecordFailure, build_record, record_failure
from cifar_lightning.speed import speed_callbacks

log = logging.getLogger(__name__)

register_resolvers()
log_filters.install()


def validate(cfg: DictConfig) -> None:
    """Reject values that would only fail (or silently misbehave) after minutes of work.

    The checks live in validation.py; the command line also runs them before Hydra makes a
    run directory (``main``).
    """
    validation.check(cfg)


def resolve_precision(precision: Any, accelerator: str) -> Any:
    """``auto``: bf16 AMP on a GPU that has it, fp16 AMP on an older GPU, fp32 on CPU."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if not on_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    callbacks = [build(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks += speed_callbacks(cfg)  # channels_last / compile (cifar_lightning/speed.py)
    if cfg.get("timing", {}).get("enabled"):
        callbacks.insert(0, timing.RunClock())  # first: its segments close before other hooks
    # Lightning refuses a progress bar / summary callback when the Trainer flag turns it off;
    # honour the flag instead, so `trainer.enable_progress_bar=false` just works.
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not cfg.trainer.get("enable_model_summary", True):
        callbacks = [c for c in callbacks if not isinstance(c, ModelSummary)]
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Logger]:
    return [build(c, "logger") for c in (cfg.get("logger") or {}).values() if c]


def build_model(cfg: DictConfig, datamodule: Any) -> ImageClassifier:
    """The model's own arguments from ``model/``, the shared ones from the other groups."""
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    model_cls = get_class(kwargs.pop("_target_"))
    try:
        return model_cls(
            **kwargs,
            num_classes=datamodule.num_classes,
            optimizer=OmegaConf.to_container(cfg.optim, resolve=True),
            scheduler=OmegaConf.to_container(cfg.sched, resolve=True),
            label_smoothing=cfg.loss.label_smoothing,
            class_names=list(datamodule.classes),
            mean=list(datamodule.mean),
            std=list(datamodule.std),
        )
    except (TypeError, ValueError) as e:  # e.g. +model.typo=1, model.dropout=2
        raise ConfigError(f"model: {e}", fix=f"see the arguments of {model_cls.__name__}") from None


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``trainer.*`` as Lightning takes it, with ``precision: auto`` resolved."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs["precision"] = resolve_precision(
        kwargs.get("precision", "auto"), str(kwargs.get("accelerator", "auto"))
    )
    return kwargs


def build_trainer(cfg: DictConfig, output_dir: Path) -> L.Trainer:
    kwargs = trainer_kwargs(cfg)
    plugins = kwargs.pop("plugins", None) or []
    # Checkpoints are written atomically and read weights-only (checkpoints.py).
    plugins = [*(plugins if isinstance(plugins, list) else [plugins]), SafeCheckpointIO()]
    try:
        return L.Trainer(
            **kwargs,
            # ResumableRun: what a resumed run needs to match an uninterrupted one (resume.py);
            # RecordFailure: a run that raises still leaves its metrics.json (status failed).
            callbacks=[
                *build_callbacks(cfg),
                resume.ResumableRun(cfg.seed),
                RecordFailure(cfg, device_name),
            ],
            logger=build_loggers(cfg) or False,
            default_root_dir=str(output_dir),
            plugins=plugins,
        )
    except (TypeError, ValueError, MisconfigurationException) as e:  # an unknown key or value
        raise ConfigError(
            f"trainer: {str(e).strip()}", fix="see lightning.pytorch.Trainer's arguments"
        ) from None


def device_name(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{device.type}: {cpu}"


def run_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def find_lr(cfg: DictConfig, datamodule: Any, output_dir: Path) -> tune.LRFindResult | None:
    """``tune.lr_find=true``: an LR range test whose suggestion becomes optim.lr (and max_lr).

    It trains a throwaway copy of the model inside a saved RNG state: the model built next
    gets the same initial weights, and the run the same random streams, as a run given the
    suggested LR on the command line.
    """
    with tune.rng_preserved():
        model = build_model(cfg, datamodule)
        result = tune.lr_range_test(model, datamodule, trainer_kwargs(cfg), cfg.tune, output_dir)
    if result is not None:
        tune.use_lr(cfg, result.suggestion)
    return result


def warm_up(cfg: DictConfig, model: ImageClassifier, datamodule: Any) -> float | None:
    """``timing.warmup_steps``: an untimed throwaway fit first (compile, cuDNN autotuning),
    inside a saved RNG state and with the weights put back, so the timed run is unchanged."""
    steps = (
        cfg.get("timing", {}).get("warmup_steps", 0) if cfg.get("timing", {}).get("enabled") else 0
    )
    if not steps:
        return None
    with tune.rng_preserved():
        seconds = timing.warm_up(
            model, datamodule, trainer_kwargs(cfg), speed_callbacks(cfg), steps
        )
    log.info("Warm-up (%d steps, untimed): %.2f s", steps, seconds)
    return round(seconds, 3)


def timing_report(
    cfg: DictConfig, trainer: L.Trainer, warmup_s: float | None
) -> dict[str, Any] | None:
    """``timing.enabled``: what airbench reports (see cifar_lightning/timing.py)."""
    clock = next((c for c in trainer.callbacks if isinstance(c, timing.RunClock)), None)
    if clock is None:
        return None
    report = {
        **clock.report(),
        "warmup_s": warmup_s,
        "cold_start_s": timing.seconds_since_process_start(),
    }
    log.info("Timing: %s", report)
    return report


def checkpoint_to_test(cfg: DictConfig, best: str) -> str | None:
    """The weights the test measures: ``test.ckpt=best`` (by val/acc) or ``last`` (final)."""
    if cfg.test.ckpt == "last":
        return None
    if not best:
        log.warning("No best checkpoint was saved; testing the final weights.")
        return None
    if cfg.data.get("val_size") == 0:
        log.warning(
            "data.val_size=0 validates on the test set, so the 'best' checkpoint was picked by "
            "test accuracy and its test number is optimistic; test.ckpt=last avoids that."
        )
    # The path, not "best": with several ModelCheckpoints Lightning would warn.
    return best


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items())}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test on the best checkpoint; returns (and writes) the run's results.

    With ``resume`` / ``ckpt_path`` set, fitting continues from that checkpoint (resume.py).
    A diverged run (NaN loss) and an interrupted one (SIGTERM, Ctrl-C) still write
    ``metrics.json`` — status ``failed`` / ``interrupted`` — before their error is raised.
    """
    started = time.perf_counter()
    validate(cfg)
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)

    # The Trainer first: a bad trainer.* value fails before minutes of data loading.
    trainer = build_trainer(cfg, output_dir)
    datamodule = build(
        cfg.data,
        "data",
        aug=build(cfg.aug.pipeline, "aug"),
        batched_aug=batched_aug.from_config(cfg),
    )
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # Load and split before fitting, so missing data or a bad split size fails before
        # anything is written. A multi-process launch leaves it to Lightning, which prepares
        # on rank zero before the other ranks set up.
        datamodule.prepare_data()
        datamodule.setup("fit")
    lr_found = find_lr(cfg, datamodule, output_dir) if cfg.get("tune", {}).get("lr_find") else None
    model = build_model(cfg, datamodule)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    model.test_tta = cfg.test.tta
    warmup_s = warm_up(cfg, model, datamodule)
    if lr_found is not None:
        tune.log_figure(trainer.loggers, lr_found)
    check_launch(trainer, in_sweep=sweeps.in_sweep())
    ckpt_path = resume.checkpoint_to_load(cfg, model)
    if cfg.get("resume"):
        # Expected when continuing a run in its own directory.
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    log.info(
        "Data: %s; model: %s (%s parameters); run dir: %s",
        datamodule.describe(),
        type(model).__name__,
        f"{model.num_parameters:,}",
        output_dir,
    )

    def finish(status: str, metrics: dict[str, float], **extra: Any) -> dict[str, Any]:
        if lr_found is not None:
            extra["lr_find"] = lr_found.record()
        return write_results(cfg, trainer, started, status, metrics, **extra)

    interrupt = next((c for c in trainer.callbacks if isinstance(c, CheckpointOnInterrupt)), None)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except TrainingDiverged as error:
        finish("failed", _floats(trainer.callback_metrics), error=error.problem)
        raise
    except SIGTERMException:
        raise interrupted(cfg, trainer, interrupt, finish) from None
    if interrupt is not None and interrupt.signal is not None:  # came after the last step
        raise interrupted(cfg, trainer, interrupt, finish)
    fit_metrics = _floats(trainer.callback_metrics)

    test_metrics: dict[str, float] = {}
    tested = None
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.test.enabled and not trainer.interrupted:
        tested_ckpt = checkpoint_to_test(cfg, best)
        trainer.test(model, datamodule=datamodule, ckpt_path=tested_ckpt)
        tested = "best" if tested_ckpt else "last"
        test_metrics = {
            k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("test/")
        }
    status = "interrupted" if trainer.interrupted else "completed"
    results = finish(
        status,
        {**fit_metrics, **test_metrics},
        tested=tested,
        timing=timing_report(cfg, trainer, warmup_s),
    )
    if trainer.is_global_zero:
        log.info(
            "Results in %s: %s",
            output_dir / "metrics.json",
            {
                k: round(v, 4)
                for k, v in results["metrics"].items()
                if k in ("val/acc_best", "test/acc", "test/acc_top5")
            },
        )
    return results


def write_results(
    cfg: DictConfig,
    trainer: L.Trainer,
    started: float,
    status: str,
    metrics: dict[str, float],
    **extra: Any,
) -> dict[str, Any]:
    """``metrics.json`` (and the HPARAMS tab): whatever the run reached, with its status."""
    output_dir = Path(cfg.paths.output_dir)
    results = build_record(
        cfg, status, metrics, time.perf_counter() - started, trainer, device_name(trainer), **extra
    )
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        # The full config beside the final numbers: TensorBoard's HPARAMS tab compares runs.
        log_config_and_metrics(
            trainer.loggers,
            OmegaConf.to_container(cfg, resolve=True),
            {k: v for k, v in results["metrics"].items() if v is not None},
        )
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # A resumed session logged again what the crashed one logged after its last
                # checkpoint: keep one value per step.
                resume.drop_superseded_events(logger.log_dir)
    return results


def interrupted(
    cfg: DictConfig,
    trainer: L.Trainer,
    interrupt: CheckpointOnInterrupt | None,
    finish: Any,
) -> RunInterrupted:
    """Record an interrupted run and say how to continue it."""
    signum = interrupt.signal if interrupt is not None and interrupt.signal else signal.SIGTERM
    name = signal.Signals(signum).name
    saved = interrupt.saved_path if interrupt is not None else None
    command = f"python -m cifar_lightning.train resume={cfg.paths.output_dir}"
    finish("interrupted", _floats(trainer.callback_metrics), resume_with=command)
    where = (
        f"{saved} holds step {interrupt.saved_step}"
        if saved and interrupt
        else "nothing was saved on the way out; the last periodic checkpoint is kept"
    )
    return RunInterrupted(
        f"training stopped on {name} at step {trainer.global_step} (epoch "
        f"{trainer.current_epoch}); {where}.",
        fix=f"continue it with: {command}",
        signum=signum,
    )


def discard_unused_run_dir(run_dir: Path) -> None:
    """Remove a run directory that holds nothing but bookkeeping (configs, logs, hparams).

    A run rejected for its config never trained: leaving an empty dated directory behind
    would clutter outputs/ and every later sweep report. Anything else (a checkpoint, an
    event file, metrics.json) means real work, and the directory stays.
    """
    if not run_dir.is_dir():
        return
    for path in run_dir.rglob("*"):
        bookkeeping = ".hydra" in path.parts or path.suffix == ".log"
        if path.is_file() and not bookkeeping and path.name != "hparams.yaml":
            return
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.parent.rmdir()  # the date directory, if this was its only run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    if sweeps.in_sweep():
        # One job of many: its failure is recorded and fails this job only (cifar_lightning/
        # sweeps.py); what it returns is what Optuna optimizes.
        with sweeps.sweep_job(cfg):
            return sweeps.optimized_value(cfg, train(cfg))
    started = time.perf_counter()
    with exit_on_user_error():
        try:
            results = train(cfg)
        except KeyboardInterrupt:  # Ctrl-C before training started (e.g. decoding data)
            if not cfg.get("resume"):
                discard_unused_run_dir(Path(cfg.paths.output_dir))
            raise RunInterrupted("interrupted before training started.", signum=2) from None
        except UserError:
            # A run rejected before it trained leaves nothing behind; a resumed run's
            # directory is the earlier run's and is never removed.
            if not cfg.get("resume"):
                discard_unused_run_dir(Path(cfg.paths.output_dir))
            raise
        except BaseException as error:  # a crash: metrics.json still says what happened
            record_failure(cfg, error, time.perf_counter() - started)
            raise
    return results["metrics"].get(cfg.get("optimized_metric"))


def main() -> None:
    """``python -m cifar_lightning.train`` / ``cifar-train``.

    The command line is checked (and ``resume=RUN_DIR`` expanded) before Hydra composes it
    and makes a run directory: a bad value costs one message, exit code 2, and leaves no trace.
    """
    with exit_on_user_error():
        args = resume.expand_argv(sys.argv[1:])
        cfg = validation.preflight(args)
        if cfg is not None:
            resume.check_before_run(cfg)
    sys.argv = [sys.argv[0], *args]
    hydra_main()


if __name__ == "__main__":
    main()
