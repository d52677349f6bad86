"""A config is checked once it is composed and before anything is written: one message each.

:func:`check` runs the schema (types, ranges: run/schema.py), the rules that relate several
values, and dry builds of the optimizer, scheduler and augmentation on dummy inputs, so that a
value torch rejects fails now rather than minutes later. :class:`CheckBeforeRun` runs it from
inside Hydra, between composing the config and making the run directory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from cifar_lightning.errors import ConfigError, exit_on_user_error
from cifar_lightning.run import schema
from cifar_lightning.run.config import (
    batched_augmentation,
    build,
    config_error,
    first_line,
    known_choices,
)
from cifar_lightning.training.classifier import make_scheduler

KNOWN_TRAIN_SIZES = {
    "cifar10": 50_000,
    "cifar100": 50_000,
}  # known before loading: the split is checked up front
DEFAULTS = {"model": "depthwise", "optim": "sgd", "data": "cifar10", "aug": "crop_flip"}
IMAGEFOLDER_FIX = (
    "add data.root=PATH (a folder with train/<class>/ and test/<class>/, or a .tar.gz of it)"
)


def check(cfg: DictConfig) -> None:
    """Everything about a training config that can be known without the data."""
    try:
        _groups_chosen(cfg)
        schema.validate(cfg)
        _relations(cfg)
    except OmegaConfBaseException as e:  # e.g. an interpolation that does not resolve
        raise config_error(e) from None
    _buildable(cfg)


def check_before_run(cfg: DictConfig) -> None:
    """What training's command line checks before Hydra writes anything: the config, and
    for ``resume=`` that the checkpoint is sound and fits it."""
    from cifar_lightning.run import resume

    check(cfg)
    resume.check_before_run(cfg)


def _groups_chosen(cfg: DictConfig) -> None:
    for name in ("model", "optim", "data", "aug", "trainer"):
        if not cfg.get(name):
            raise ConfigError(
                f"no {name} chosen (the {name} group was removed).",
                fix=f"pick one of conf/{name}/, e.g. {name}=" + DEFAULTS.get(name, "..."),
            )
    if cfg.model.get("_target_") is None:
        raise ConfigError("no model chosen.", fix="add model=depthwise (see conf/model/)")
    if cfg.data.get("source") == "imagefolder" and not cfg.data.get("root"):
        raise ConfigError("data=imagefolder needs data.root.", fix=IMAGEFOLDER_FIX)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{missing[0]} has no value (??? in its config file).",
            fix=f"set it on the command line: {missing[0]}=...",
        )


def _relations(cfg: DictConfig) -> None:
    """The rules that involve more than one value."""
    from cifar_lightning.data.datamodule import check_split
    from cifar_lightning.run import tune

    trainer = cfg.trainer
    if trainer.get("max_epochs") == -1 and trainer.get("max_steps", -1) == -1:
        raise ConfigError(
            "trainer.max_epochs=-1 with trainer.max_steps=-1 would train forever.",
            fix="set trainer.max_epochs or trainer.max_steps to a positive number",
        )
    if trainer.get("sync_batchnorm") and _on_cpu(trainer):
        raise ConfigError(
            "trainer.sync_batchnorm=true needs GPUs: torch's SyncBatchNorm runs on no CPU.",
            fix="drop trainer.sync_batchnorm, or train on GPUs (trainer.accelerator=gpu)",
        )
    data = cfg.data
    size = data.fake_train_size if data.source == "fake" else KNOWN_TRAIN_SIZES.get(data.source)
    if size is not None:  # an image folder is checked once it is loaded
        check_split(size, data.val_size, data.batch_size)
    if cfg.tune.lr_find:
        tune.check(cfg.tune, cfg.trainer)


def _on_cpu(trainer: DictConfig) -> bool:
    accelerator = str(trainer.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def _buildable(cfg: DictConfig) -> None:
    """Build what can be built without data: what torch or a constructor rejects, now."""

    build(cfg.speed, "speed")
    batched_augmentation(cfg)  # data.loader=device with an aug that has no batched form
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = _dry("optim", cfg.optim, lambda: instantiate(cfg.optim)(params=[param]))
    scheduler = (cfg.get("sched") or {}).get("scheduler")
    if scheduler:
        _dry("sched", scheduler, lambda: make_scheduler(cfg.sched, optimizer, lambda: 100))
    if cfg.aug.get("pipeline") is not None:
        pipeline = build(cfg.aug.pipeline, "aug")
        with torch.random.fork_rng(devices=[]):  # leave the seeded RNG as it was
            try:
                pipeline(torch.zeros(3, 32, 32, dtype=torch.uint8))
            except Exception as e:
                raise ConfigError(
                    f"aug: the pipeline fails on a 32x32 image ({first_line(e)}).",
                    fix="check the aug.pipeline.* values (conf/aug/)",
                ) from None


def _dry(what: str, node: DictConfig, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except Exception as e:  # whatever torch or Hydra raise, the user sees one line
        cause = e
        while cause.__cause__ is not None:  # Hydra wraps what the constructor raised
            cause = cause.__cause__
        raise ConfigError(
            f"{what}: {first_line(cause)}",
            fix=f"check the {what}.* values ({node.get('_target_', '?')})",
        ) from None


class CheckBeforeRun(Callback):
    """Hydra callback: check the composed config before Hydra makes the run directory, and a
    continued sweep before its first job."""

    def __init__(self, check: str = "cifar_lightning.run.checks.check_before_run") -> None:
        self.check = check

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import get_method

        choices = {k: str(v) for k, v in config.hydra.runtime.choices.items() if v is not None}
        cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        with open_dict(cfg):
            cfg.paths.output_dir = "<run dir>"  # ${hydra:runtime.output_dir}: no run yet
        # Exit here, not raise: Hydra turns a callback's exceptions into warnings.
        with known_choices(choices), exit_on_user_error():
            get_method(self.check)(cfg)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep dir that holds a sweep continues it, with the same overrides only."""
        from cifar_lightning.run.sweep_resume import check_same_sweep

        with exit_on_user_error():
            check_same_sweep(config)
