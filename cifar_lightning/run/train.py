"""``train(cfg)``: build what the config names, fit, test, and leave ``metrics.json`` behind.

A plain function over a composed config, so tests, sweepers and notebooks call it directly;
``python -m cifar_lightning.train`` (cifar_lightning/train.py) is a thin ``@hydra.main`` that
imports this module only once the config is composed and checked, and calls :func:`run`.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelSummary, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cifar_lightning.errors import RunInterrupted, UserError, exit_on_user_error
from cifar_lightning.run import checks, record, resume, sweeps, timing, tune
from cifar_lightning.run.checkpoints import CheckpointRecord
from cifar_lightning.run.config import batched_augmentation, build
from cifar_lightning.run.distributed import check_launch
from cifar_lightning.run.search import pruning
from cifar_lightning.run.trainer import make_trainer
from cifar_lightning.training.callbacks import ResumableRun, RunClock

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """``callbacks/``, ``speed``, ``ema``, and the callbacks that are part of what a run is."""
    callbacks: list[Callback] = [build(c, "callbacks") for c in cfg.callbacks.values() if c]
    if cfg.ema.enabled:  # first: a checkpoint saved after a step must hold that step's average
        callbacks.insert(0, build_ema(cfg.ema))
    # Always on, so not config: exact resume (per-step seeds, log flushes) and the
    # checkpoint's record; the clock exists only in a timed run (first and last: see RunClock).
    run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks += [build(cfg.speed, "speed"), ResumableRun(cfg.seed), CheckpointRecord(run_config)]
    callbacks += pruning.callbacks(cfg)  # a trial of a search that prunes reports each epoch
    if cfg.timing.enabled:
        clock = RunClock()
        callbacks = [clock, *callbacks, clock.starter]
    # Lightning refuses a progress bar / summary callback when its Trainer flag is off.
    off = (ProgressBar,) * (not cfg.trainer.enable_progress_bar)
    off += (ModelSummary,) * (not cfg.trainer.enable_model_summary)
    return [c for c in callbacks if not isinstance(c, off)]


def build_ema(node: DictConfig) -> Callback:
    """``ema``'s callback; ``enabled`` is the switch, every other key its constructor's."""
    spec = OmegaConf.to_container(node, resolve=True)
    spec.pop("enabled")
    return build(OmegaConf.create(spec), "ema")


def build_trainer(cfg: DictConfig) -> L.Trainer:
    loggers = [build(c, "logger") for c in cfg.logger.values() if c]
    return make_trainer(cfg.trainer, build_callbacks(cfg), loggers or False, cfg.paths.output_dir)


def test(cfg: DictConfig, trainer: L.Trainer, model: Any, datamodule: Any) -> str | None:
    """Test ``test.ckpt``'s weights (best by val/acc, or the last); returns which."""
    if not cfg.test.enabled:
        return None
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.test.ckpt == "best" and not best:
        log.warning("No best checkpoint was saved; testing the final weights.")
    elif cfg.test.ckpt == "best" and cfg.data.val_size == 0:
        log.warning(
            "data.val_size=0 validates on the test set, so the 'best' checkpoint was picked by "
            "test accuracy and its test number is optimistic; test.ckpt=last avoids that."
        )
    use_best = cfg.test.ckpt == "best" and bool(best)
    # The path, not "best": with several ModelCheckpoints Lightning would warn. Our table, not
    # Lightning's: it prints every float in full (run/console.py).
    ckpt_path = best if use_best else None
    results = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if trainer.is_global_zero:
        from cifar_lightning.run.console import print_test_results

        print_test_results(results)
    return "best" if use_best else "last"


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test; writes (and returns) ``metrics.json``, whatever becomes of the run."""
    started = time.perf_counter()
    checks.check(cfg)  # a config that cannot run leaves nothing behind
    trainer, extra, fit_metrics = None, {}, {}
    try:
        L.seed_everything(cfg.seed, workers=True)
        trainer = build_trainer(cfg)  # first: a bad trainer.* value fails before data loading
        aug, batched = build(cfg.aug.pipeline, "aug"), batched_augmentation(cfg)
        datamodule = build(cfg.data, "data", aug=aug, batched_aug=batched)
        if trainer.world_size == 1:  # missing data fails now; DDP prepares on rank zero
            datamodule.prepare_data()
            datamodule.setup("fit")
        if cfg.tune.lr_find:
            extra["lr_find"] = tune.find_lr(cfg, datamodule, trainer.loggers)
        model = build(cfg.model, "model")
        model.test_tta = cfg.test.tta
        warmup_s = timing.warm_up(cfg, model, datamodule)
        check_launch(trainer, in_sweep=sweeps.in_sweep())
        log.info("Data: %s; model: %s (%s parameters)", datamodule.describe(),
                 type(model).__name__, f"{model.num_parameters:,}")  # fmt: skip
        ckpt_path = resume.checkpoint_to_load(cfg, model)
        if cfg.resume:  # continuing in its own directory: expected
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not")
        with contextlib.suppress(SIGTERMException):  # Lightning's way out after our save
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if (stopped := resume.interruption(cfg, trainer)) is not None:
            raise stopped
        fit_metrics = dict(trainer.callback_metrics)
        extra["tested"] = test(cfg, trainer, model, datamodule)
        extra["timing"] = timing.report(cfg, trainer, warmup_s, started)
    except BaseException as error:
        interrupted = isinstance(error, RunInterrupted | KeyboardInterrupt)
        if isinstance(error, RunInterrupted):
            extra["resume_with"] = resume.command(cfg)
        if isinstance(error, pruning.Pruned):  # the search stopped it: not a failure
            status = "pruned"
            extra.update(epochs=error.epoch, pruned=error.problem)
        else:
            extra["error"] = record.describe_error(error)
            status = "interrupted" if interrupted else "failed"
        record.write(cfg, record.build(cfg, status, started, trainer, **extra), trainer)
        raise
    metrics = {**fit_metrics, **trainer.callback_metrics}
    results = record.build(cfg, "completed", started, trainer, metrics, **extra)
    record.write(cfg, results, trainer)
    return results


def run(cfg: DictConfig) -> float | None:
    """What ``cifar-train`` does with its composed config (cifar_lightning/train.py): train,
    one message for a UserError, and the number a sweeper optimizes."""
    if sweeps.in_sweep():  # one job of many: its failure fails this job only (run/sweeps.py)
        return sweeps.run_job(cfg, train)
    with exit_on_user_error():
        try:
            results = train(cfg)
        except KeyboardInterrupt:  # Ctrl-C before training started (e.g. decoding data)
            record.discard_unused_run_dir(cfg)
            raise RunInterrupted("interrupted before training started.", signum=2) from None
        except UserError:
            record.discard_unused_run_dir(cfg)  # a rejected run leaves nothing behind
            raise
    return results["metrics"].get(cfg.get("optimized_metric"))
