"""Every config value checked before any work starts: one clear message each, exit code 2.

Three layers, cheapest first:

1. :func:`preflight` composes the command line's config the way Hydra is about to, before
   Hydra makes a run directory: an unknown group option, a misspelt key or an override that
   does not parse becomes a :class:`ConfigError` instead of Hydra's report with its config
   search path.
2. :data:`RULES`, a typed table of the values users set: wrong types (``optim.lr=abc``) and
   out-of-range values (``data.batch_size=0``) are named with the value and a fix.
3. :func:`check_buildable` builds the optimizer and scheduler on a dummy parameter and runs
   the augmentation on a dummy image: a misspelt ``+optim.x=…`` argument, a value torch
   rejects, or a crop larger than the padded image fails now — not minutes later inside a
   loader worker or ``configure_optimizers``.

Checks that need the data itself (a ``val_size`` larger than an image folder's training set)
happen when the data is loaded, still before training; the run directory is then removed.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from cifar_lightning import tune
from cifar_lightning.configs import build, compose_config, known_choices
from cifar_lightning.data import batched_aug
from cifar_lightning.data.datamodule import check_split
from cifar_lightning.errors import ConfigError
from cifar_lightning.models.tta import TTA_MODES
from cifar_lightning.speed import speed_callbacks

# Images in the training set of the sources whose size is known before loading them.
KNOWN_TRAIN_SIZES = {"cifar10": 50_000}


@dataclass(frozen=True)
class Rule:
    """``key`` must have type ``kind`` and satisfy ``ok``; ``text`` says what ``ok`` wants."""

    key: str
    kind: str  # "int" | "number" | "bool" | "str"
    example: str  # a valid value, for the fix
    ok: Callable[[Any], bool] = lambda v: True
    text: str = ""
    optional: bool = False  # null allowed
    fix: str | None = None

    def fix_text(self) -> str:
        return self.fix or f"e.g. {self.key}={self.example}"


def positive(v: float) -> bool:
    return v > 0


def fraction(v: float) -> bool:
    return 0 <= v < 1


def at_least(n: int) -> Callable[[Any], bool]:
    return lambda v: v >= n


RULES: tuple[Rule, ...] = (
    Rule("seed", "int", "42", lambda v: 0 <= v < 2**32, "must be in [0, 2**32)"),
    Rule("test.enabled", "bool", "true"),
    Rule("timing.enabled", "bool", "true"),
    Rule("timing.warmup_steps", "int", "30", at_least(0), "must be 0 or more"),
    Rule("ckpt_path", "str", "outputs/<date>/<time>/checkpoints/last.ckpt", optional=True),
    Rule("resume", "str", "outputs/<date>/<time>", optional=True),
    Rule("loss.label_smoothing", "number", "0.1", fraction, "must be in [0, 1)"),
    Rule("optim.lr", "number", "0.05", positive, "must be positive"),
    Rule("optim.weight_decay", "number", "5e-4", at_least(0), "must be 0 or more"),
    Rule("optim.momentum", "number", "0.9", fraction, "must be in [0, 1)"),
    Rule(
        "sched.interval", "str", "step", lambda v: v in ("step", "epoch"), "must be step or epoch"
    ),
    Rule("model.dropout", "number", "0.05", fraction, "must be in [0, 1)"),
    Rule("data.batch_size", "int", "128", at_least(1), "must be at least 1"),
    Rule("data.val_size", "int", "5000", at_least(0), "must be 0 (validate on test) or more"),
    Rule("data.split_seed", "int", "0", at_least(0), "must be 0 or more"),
    Rule("data.shuffle_seed", "int", "0", at_least(0), "must be 0 or more"),
    Rule("data.num_workers", "int", "4", at_least(0), "must be 0 or more (or null)", True),
    Rule("data.pin_memory", "bool", "true", optional=True),
    Rule("data.download", "bool", "true"),
    Rule("data.fake_train_size", "int", "2000", at_least(1), "must be at least 1"),
    Rule("data.fake_test_size", "int", "500", at_least(1), "must be at least 1"),
    Rule(
        "trainer.max_epochs",
        "int",
        "20",
        lambda v: v >= 1 or v == -1,
        "trains nothing",
        optional=True,
        fix="use a positive number of epochs (or -1 with trainer.max_steps)",
    ),
    Rule("trainer.max_steps", "int", "1000", lambda v: v >= 1 or v == -1, "must be >= 1 or -1"),
    Rule("trainer.log_every_n_steps", "int", "50", at_least(1), "must be at least 1"),
    Rule("trainer.accumulate_grad_batches", "int", "1", at_least(1), "must be at least 1"),
    Rule("trainer.num_sanity_val_steps", "int", "2", at_least(-1), "must be -1 or more"),
    Rule("trainer.check_val_every_n_epoch", "int", "1", at_least(1), "must be at least 1", True),
    Rule("trainer.gradient_clip_val", "number", "1.0", positive, "must be positive", True),
    Rule("trainer.deterministic", "bool", "true", optional=True),
)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, bool):  # True is an int to Python, never to a user
        return False
    return isinstance(value, int) if kind == "int" else isinstance(value, int | float)


# What to suggest when a whole group was removed (~optim).
DEFAULTS = {"model": "depthwise", "optim": "sgd", "data": "cifar10", "aug": "crop_flip"}
TYPE_NAMES = {"int": "a whole number", "number": "a number", "bool": "true or false", "str": "text"}


def check_values(cfg: DictConfig) -> None:
    """The typed table, then the checks that relate several values."""
    for name in ("model", "optim", "data", "aug", "trainer"):
        if not cfg.get(name):
            raise ConfigError(
                f"no {name} chosen (the {name} group was removed).",
                fix=f"pick one of conf/{name}/, e.g. {name}=" + DEFAULTS.get(name, "..."),
            )
    if cfg.model.get("_target_") is None:
        raise ConfigError("no model chosen.", fix="add model=depthwise (see conf/model/)")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if "data.root" in missing:
        raise ConfigError(
            f"data={cfg.data.source} needs data.root.",
            fix="add data.root=PATH (a folder with train/<class>/ and test/<class>/, or a "
            ".tar.gz of it, e.g. ../shared/data/cifar10-jpeg.tar.gz)",
        )
    if missing:
        raise ConfigError(
            f"{missing[0]} has no value (??? in its config file).",
            fix=f"set it on the command line: {missing[0]}=...",
        )
    for rule in RULES:
        node, _, leaf = rule.key.rpartition(".")
        parent = OmegaConf.select(cfg, node) if node else cfg
        if parent is None or leaf not in parent:
            continue
        value = OmegaConf.select(cfg, rule.key)
        if value is None and rule.optional:
            continue
        if not _type_ok(value, rule.kind):
            raise ConfigError(
                f"{rule.key}={_show(value)} must be {TYPE_NAMES[rule.kind]}.",
                fix=rule.fix_text(),
            )
        if not rule.ok(value):
            raise ConfigError(f"{rule.key}={_show(value)} {rule.text}.", fix=rule.fix_text())
    trainer = cfg.trainer
    if trainer.get("max_epochs") == -1 and trainer.get("max_steps", -1) == -1:
        raise ConfigError(
            f"trainer.max_epochs={trainer.get('max_epochs')} with trainer.max_steps=-1 "
            "would train forever.",
            fix="set trainer.max_epochs or trainer.max_steps to a positive number",
        )
    _check_split(cfg.data)


def _check_split(data: DictConfig) -> None:
    """val_size and batch_size against the training set, where its size is known up front."""
    source = data.get("source")
    n = data.get("fake_train_size") if source == "fake" else KNOWN_TRAIN_SIZES.get(source)
    if n is None:
        return  # an image folder: checked once it is loaded (CIFAR10DataModule.setup)
    check_split(n, data.val_size, data.batch_size)


def _cause(error: BaseException) -> BaseException:
    """The innermost exception: Hydra wraps what a constructor raised."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def check_buildable(cfg: DictConfig) -> None:
    """Build the optimizer and scheduler on a dummy parameter, and run the augmentation once."""
    param = torch.nn.Parameter(torch.zeros(1))
    try:
        optimizer = instantiate(cfg.optim)(params=[param])
    except Exception as e:  # whatever torch or Hydra raise, the user sees one line
        target = cfg.optim.get("_target_", "?")
        raise ConfigError(
            f"optim: {_first_line(_cause(e))}", fix=f"check the optim.* values ({target})"
        ) from None
    scheduler = (cfg.get("sched") or {}).get("scheduler")
    if scheduler:
        try:
            make = instantiate(scheduler)
            kwargs = {}
            if isinstance(make, functools.partial) and (
                "total_steps" in inspect.signature(make.func).parameters
                and make.keywords.get("total_steps") is None
            ):
                kwargs["total_steps"] = 100  # the real length comes from the Trainer
            make(optimizer, **kwargs)
        except Exception as e:
            target = scheduler.get("_target_", "?")
            raise ConfigError(
                f"sched: {_first_line(_cause(e))}", fix=f"check the sched.* values ({target})"
            ) from None
    if cfg.aug.get("pipeline") is not None:
        pipeline = build(cfg.aug.pipeline, "aug")
        image = torch.zeros(3, 32, 32, dtype=torch.uint8)
        with torch.random.fork_rng(devices=[]):  # leave the seeded RNG as it was
            try:
                pipeline(image)
            except Exception as e:
                raise ConfigError(
                    f"aug: the pipeline fails on a 32x32 image ({_first_line(e)}).",
                    fix="check the aug.pipeline.* values (conf/aug/)",
                ) from None


def check_features(cfg: DictConfig) -> None:
    """Options whose modules know their own rules: the test's weights, the LR range test,
    the speed switches, and whether the chosen loader can run the chosen augmentation."""
    if cfg.test.ckpt not in ("best", "last"):
        raise ConfigError(f"test.ckpt={cfg.test.ckpt} is not best or last.", fix="test.ckpt=last")
    if cfg.test.tta not in TTA_MODES:
        raise ConfigError(
            f"test.tta={cfg.test.tta} is not a test-time augmentation.",
            fix=f"use one of test.tta={', test.tta='.join(TTA_MODES)}",
        )
    if cfg.get("tune", {}).get("lr_find"):
        tune.check(cfg.tune, cfg.trainer)
    speed_callbacks(cfg)  # a bad compile= / channels_last= value
    batched_aug.from_config(cfg)  # data.loader=device with an aug that has no batched form


def check(cfg: DictConfig) -> None:
    """All config checks that need no data: values, then a dry build."""
    try:
        check_values(cfg)
    except OmegaConfBaseException as e:  # e.g. an interpolation that does not resolve
        raise _omegaconf_error(e) from None
    check_features(cfg)
    check_buildable(cfg)


# --- the command line, before Hydra ---------------------------------------------------------

HYDRA_FLAG = re.compile(r"^-")


def preflight(args: Sequence[str]) -> DictConfig | None:
    """Compose and check the command line's config; raise ConfigError on the first problem.

    Returns the composed config (``paths.output_dir`` is a placeholder), or None when skipped.

    Skipped for Hydra's own flags (``--cfg``, ``--help``, ``-m`` …) and for sweep overrides
    (``x=choice(1,2)``, e.g. under ``hparams_search=optuna``): those print, or sweep, and each
    job of a sweep is checked when it starts.
    """
    if any(HYDRA_FLAG.match(a) for a in args):
        return None
    # hydra.searchpath adds config directories (a user's own aug=… files): composition needs it.
    overrides = [
        a for a in args if not override_is_hydras(a) or a.lstrip("+").startswith("hydra.searchpath")
    ]
    for override in overrides:
        try:
            (parsed,) = OverridesParser.create().parse_overrides([override])
            if parsed.is_sweep_override():
                return None
        except OverrideParseException as e:
            raise ConfigError(
                f"cannot read the override {override!r} ({_first_line(e)}).",
                fix="write key=value; quote a value with spaces or special characters, e.g. "
                "'data.root=\"/my data/cifar\"'",
            ) from None
    try:
        cfg = compose_config(overrides, return_hydra_config=True)
    except MissingConfigException as e:
        raise _unknown_option(e) from None
    except ConfigCompositionException as e:
        raise _composition_error(e) from None
    except OmegaConfBaseException as e:  # e.g. optim.lr=${nope}
        raise _omegaconf_error(e) from None
    except HydraException as e:
        raise ConfigError(_first_line(e), fix=_rest(e) or "see `--help`") from None
    choices = {k: str(v) for k, v in cfg.hydra.runtime.choices.items() if v is not None}
    with open_dict(cfg):
        del cfg["hydra"]  # its run-dir interpolations would claim a directory if resolved
        cfg.paths.output_dir = "<run dir>"  # ${hydra:runtime.output_dir} needs a Hydra run
    with known_choices(choices):  # so messages can say aug=rotate, not "the chosen aug"
        check(cfg)
    return cfg


def override_is_hydras(override: str) -> bool:
    key = override.lstrip("~+")
    return key.startswith(("hydra.", "hydra/")) or key.split("=", 1)[0] == "hydra"


def _rest(error: BaseException) -> str | None:
    lines = [line.strip() for line in str(error).strip().splitlines()[1:] if line.strip()]
    return "; ".join(lines) or None


def _omegaconf_error(error: OmegaConfBaseException) -> ConfigError:
    key = getattr(error, "full_key", None)
    return ConfigError(
        f"{key}: {_first_line(error)}" if key else _first_line(error),
        fix="check the ${...} reference (an existing key, e.g. ${optim.lr}, or a resolver)",
    )


def _unknown_option(error: MissingConfigException) -> ConfigError:
    text = str(error)
    found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    options = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", text)
    if not found:
        return ConfigError(_first_line(error), fix=_rest(error))
    group, option = found.groups()
    choices = options.group(1).split() if options else []
    return ConfigError(
        f"{group}={option} is not an option of the {group} group.",
        fix=(f"use one of: {', '.join(f'{group}={c}' for c in choices)} (conf/{group}/)")
        if choices
        else f"see conf/{group}/",
    )


def _composition_error(error: ConfigCompositionException) -> ConfigError:
    text = str(error)
    found = re.search(r"Could not override '([^']+)'", text)
    if found:
        key = found.group(1)
        return ConfigError(
            f"{key} is not a config key.",
            fix="check its spelling against `python -m cifar_lightning.train --cfg job`; "
            f"to add a new key anyway, write +{key}=...",
        )
    return ConfigError(_first_line(error), fix=_rest(error))
