"""A config is checked once it is composed and before anything is written: one message each.

:func:`check` runs the schema (types, ranges: run/schema.py), the rules that relate several
values, and dry builds of the optimizer, scheduler and augmentation on dummy inputs, so that a
value torch rejects fails now rather than minutes later. :class:`CheckBeforeRun` runs it from
inside Hydra, between composing the config and making the run directory, and for a sweep on
every job's config before the first job starts.

torch is imported only by the checks that build something, after the schema's: a wrong type or
range is reported in about a second, as a typo is (README "When something is wrong").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from cifar_lightning.errors import ConfigError, DataError, UserError, exit_on_user_error
from cifar_lightning.run import schema
from cifar_lightning.run.config import (
    batched_augmentation,
    build,
    config_error,
    first_line,
    known_choices,
)

KNOWN_TRAIN_SIZES = {
    "cifar10": 50_000,
    "cifar100": 50_000,
}  # known before loading: the split is checked up front
ROOT_FIX = (
    "point data.root at a folder with train/<class>/ and test/<class>/, or at a .tar.gz of it"
)
DEFAULTS = {"model": "depthwise", "optim": "sgd", "data": "cifar10", "aug": "crop_flip"}
IMAGEFOLDER_FIX = (
    "add data.root=PATH (a folder with train/<class>/ and test/<class>/, or a .tar.gz of it)"
)


def check(cfg: DictConfig) -> None:
    """Everything about a training config that can be known without the data."""
    check_values(cfg)
    try:
        _relations(cfg)
    except OmegaConfBaseException as e:
        raise config_error(e) from None
    _buildable(cfg)


def check_values(cfg: DictConfig) -> None:
    """The first part of :func:`check`, which needs no torch: every group chosen, every value
    of the right type and in range."""
    try:
        _groups_chosen(cfg)
        schema.validate(cfg)
    except OmegaConfBaseException as e:  # e.g. an interpolation that does not resolve
        raise config_error(e) from None


def check_before_run(cfg: DictConfig) -> None:
    """What training's command line checks before Hydra writes anything: the config, and
    for ``resume=`` that the checkpoint is sound and fits it."""
    check(cfg)
    if cfg.get("resume"):  # reading checkpoints needs torch and Lightning: only then
        from cifar_lightning.run import resume

        resume.check_before_run(cfg)


def check_evaluation(cfg: DictConfig) -> None:
    """evaluate's and export's command line before Hydra makes the run dir, without torch: a
    checkpoint named and every value of the right type and range (the checkpoint itself is
    read once the work starts)."""
    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "no checkpoint given.",
            fix=f"python -m cifar_lightning.{cfg.task_name} "
            "ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt",
        )
    try:
        schema.validate(cfg)
    except OmegaConfBaseException as e:
        raise config_error(e) from None


RESIZE_MODES = ("crop", "stretch")


def check_prediction(cfg: DictConfig) -> None:
    """predict's values, checked before torch loads (and by predict() itself)."""
    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "no checkpoint given.",
            fix="python -m cifar_lightning.predict ckpt_path=outputs/<date>/<time>/checkpoints/"
            "last.ckpt images=[cat.jpg,photos/]",
        )
    inputs = cfg.get("images")
    if not ([inputs] if isinstance(inputs, str) else list(inputs or [])):
        raise ConfigError("no images given.", fix="add images=cat.jpg or images=[cat.jpg,photos/]")
    resize = cfg.get("resize", "crop")
    if resize not in RESIZE_MODES:
        raise ConfigError(f"resize={resize!r} is not a way to resize.", fix="use crop or stretch")
    if int(cfg.get("topk", 3)) < 1:
        raise ConfigError(f"topk={cfg.topk} must be at least 1.", fix="e.g. topk=3")
    if not float(cfg.get("temperature", 1.0)) > 0:
        raise ConfigError(
            f"temperature={cfg.temperature} must be positive.",
            fix="use the one evaluate calibrate=true fitted (eval.json), or 1",
        )


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
    if cfg.data.get("source") == "imagefolder" and not Path(cfg.data.root).expanduser().exists():
        # Here, not when the data loads: before torch imports and before a sweep's first job.
        raise DataError(f"data.root={cfg.data.root} does not exist.", fix=ROOT_FIX)
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
    import torch

    accelerator = str(trainer.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def _buildable(cfg: DictConfig) -> None:
    """Build what can be built without data: what torch or a constructor rejects, now."""
    import torch

    from cifar_lightning.training.classifier import make_scheduler

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


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper will split them (``a=1,2 b=x,y``: four
    jobs); none for another sweeper (Optuna draws its trials as it goes)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        return []
    arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    arguments += [str(o) for o in config.hydra.overrides.task]
    overrides = OverridesParser.create().parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return [job for batch in batches for job in batch]


def check_sweep(config: DictConfig, check: Callable[[DictConfig], None] = check) -> None:
    """Every job of a sweep composed and checked before the first one starts: a bad value in
    job 5 should not wait for jobs 0-4 to train. All jobs' values first (no torch: a typo
    answers at once), then ``check`` on each. The message names the job as Hydra's log does
    (``#1 : optim.lr=abc …``)."""
    loader = GlobalHydra.instance().config_loader()
    jobs = []
    for num, overrides in enumerate(sweep_jobs(config)):
        with _naming_the_job(num, overrides):
            try:
                job_config = loader.load_sweep_config(config, overrides)
            except (HydraException, OmegaConfBaseException) as e:
                raise config_error(e) from None
            cfg, choices = _job_config(job_config)
            with known_choices(choices):
                check_values(cfg)
        jobs.append((num, overrides, cfg, choices))
    for num, overrides, cfg, choices in jobs:
        with _naming_the_job(num, overrides), known_choices(choices):
            check(cfg)


@contextmanager
def _naming_the_job(num: int, overrides: list[str]) -> Iterator[None]:
    try:
        yield
    except UserError as error:
        error.problem = f"sweep job #{num} ({' '.join(overrides)}): {error.problem}"
        error.args = (error.problem,)
        raise


def _job_config(config: DictConfig) -> tuple[DictConfig, dict[str, str]]:
    """A job's config as train() sees it, without the run dir it does not have yet, and its
    group choices (for the messages)."""
    choices = {k: str(v) for k, v in config.hydra.runtime.choices.items() if v is not None}
    cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    with open_dict(cfg):
        cfg.paths.output_dir = "<run dir>"  # ${hydra:runtime.output_dir}: no run yet
    return cfg, choices


class CheckBeforeRun(Callback):
    """Hydra callback: check the composed config before Hydra makes the run directory; for a
    sweep, every job's config and that a continued sweep keeps its overrides."""

    def __init__(self, check: str = "cifar_lightning.run.checks.check_before_run") -> None:
        self.check = check

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import get_method

        cfg, choices = _job_config(config)
        # Exit here, not raise: Hydra turns a callback's exceptions into warnings.
        with known_choices(choices), exit_on_user_error():
            get_method(self.check)(cfg)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before the sweep dir is made: the jobs' configs, then a sweep dir that holds a
        sweep continues it, with the same overrides only."""
        from hydra.utils import get_method

        from cifar_lightning.run.sweep_resume import check_same_sweep

        with exit_on_user_error():
            check_sweep(config, get_method(self.check))
            check_same_sweep(config)
