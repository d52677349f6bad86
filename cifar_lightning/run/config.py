"""Where the configs live (``conf/`` at the repo root, ``cifar_lightning/conf`` in a wheel),
the resolvers they use, how they are composed and built, and how a command line that does
not compose becomes one clear message.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from cifar_lightning.errors import ConfigError, JobFailed, UserError, exit_on_user_error

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The ``conf`` directory: inside the package when installed from a wheel, else the repo's."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"cifar_lightning's configs are missing: looked for conf/train.yaml in {_PACKAGE_DIR} "
        f"and {_PACKAGE_DIR.parent}. Reinstall the package (make install)."
    )


CONFIG_DIR = str(config_dir())


def claim_dir(path: str) -> str:
    """Reserve a fresh run directory, adding ``-1``, ``-2`` … when ``path`` is taken: two runs
    started in the same second must not share one. ``mkdir`` without ``exist_ok`` is atomic;
    the processes of one distributed launch share one claim (run/distributed.py)."""
    from cifar_lightning.run.distributed import shared_claim

    return shared_claim(path, _claim_fresh)


def _claim_fresh(path: str) -> str:
    base, n = path, 0
    while True:
        candidate = base if n == 0 else f"{base}-{n}"
        try:
            os.makedirs(candidate, exist_ok=False)
            return candidate
        except FileExistsError:
            n += 1


def uint8(values: Any) -> list[int]:
    """``${uint8:${data.mean}}``: fractions (like data.mean) as the 0..255 pixel values a
    uint8 pipeline's fill needs, kept in step with ``data.mean``."""
    return [round(float(v) * 255) for v in values]


_DATE, _TIME = re.compile(r"\d{4}-\d{2}-\d{2}"), re.compile(r"\d{2}-\d{2}-\d{2}(-\d+)?")


def run_label(output_dir: str, task: str = "train", when: bool = True) -> str:
    """``${run_label:${paths.output_dir},${task_name}}``: a run's name in MLflow and in
    HPARAMS' ``run`` column, ``2026-12-02_21-40-05 depthwise`` (the run dir's date and time;
    ``#3`` for a sweep's job 3; the experiment, else the model, else the task), so runs from
    several directories stay apart and say what they are. ``when=false``: the name alone, for
    TensorBoard's run list, whose names are paths that hold the date and time already
    (``2026-12-02/21-40-05/tensorboard/depthwise``)."""
    what = chosen_option("experiment") or chosen_option("model") or task
    if not when:
        return what
    parts = Path(str(output_dir)).parts
    stamp = parts[-1] if parts else "run"
    for i in range(len(parts) - 1):
        if _DATE.fullmatch(parts[i]) and _TIME.fullmatch(parts[i + 1]):
            stamp = f"{parts[i]}_{parts[i + 1]}"
            if i + 2 < len(parts):  # a sweep's job number
                stamp += f" #{'/'.join(parts[i + 2 :])}"
    return f"{stamp} {what}"


def register_resolvers() -> None:
    """Idempotent. ``claim_dir`` caches: Hydra resolves the run dir more than once, all must
    see one claim. ``mul`` scales a search range around the optimizer's default LR. The
    sweep and cluster resolvers need torch and Lightning, so they load on use: a config
    error should not wait for them."""
    resolvers = {
        "claim_dir": claim_dir,
        "uint8": uint8,
        "mul": lambda a, b: float(a) * float(b),
        "run_label": run_label,
        "parallel_jobs": _deferred("sweeps", "parallel_jobs"),
        "processes_per_node": _deferred("distributed", "processes_per_node"),
        "gpus_per_node": _deferred("distributed", "gpus_per_node"),
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=name == "claim_dir")


def _deferred(module: str, name: str) -> Callable[..., Any]:
    return lambda *args: getattr(importlib.import_module(f"cifar_lightning.run.{module}"), name)(
        *args
    )


# Every reader of the configs imports this module: their resolvers exist from then on.
register_resolvers()


def compose_config(
    overrides: list[str] | None = None,
    config_name: str = "train",
    return_hydra_config: bool = False,
) -> DictConfig:
    """Compose a config as its command would, for tests and tools (no Hydra run: callers
    set ``paths.output_dir`` themselves)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name, list(overrides or []), return_hydra_config)


# The group choices of a config checked before Hydra's run starts (run/checks.py), for
# chosen_option's messages: Hydra's own record of them exists only inside a job.
_composed_choices: ContextVar[dict[str, str] | None] = ContextVar("choices", default=None)


@contextmanager
def known_choices(choices: dict[str, str]) -> Iterator[None]:
    token = _composed_choices.set(choices)
    try:
        yield
    finally:
        _composed_choices.reset(token)


def compose_for_tool(argv: Sequence[str], config_name: str) -> tuple[DictConfig, dict[str, str]]:
    """The config of a tool that writes no run dir (summary, show_aug), and its group choices;
    a bad argument is the same ConfigError train gives. ``--version`` and ``-sc`` (shell
    completion) are answered here, as for the ``@hydra.main`` commands."""
    answer_version(argv)
    answer_shell_completion(argv, config_name)
    try:
        cfg = compose_config(list(argv), config_name, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        foreign = isinstance(e, ConfigCompositionException) and _foreign_group(config_name, argv)
        raise (foreign or config_error(e)) from None
    choices = {k: str(v) for k, v in cfg.hydra.runtime.choices.items() if v is not None}
    with open_dict(cfg):
        del cfg["hydra"]  # its run-dir interpolations would claim a directory if resolved
    return cfg, choices


def chosen_option(group: str) -> str | None:
    """The option picked for a group (``aug=crop_flip`` → "crop_flip"): Hydra's record in a
    job, else :func:`known_choices`, else None."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
    else:
        choice = (_composed_choices.get() or {}).get(group)
    return str(choice) if choice is not None else None


def build(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``instantiate`` with errors a user can act on: our UserErrors come out unwrapped,
    anything else a constructor raises is one ConfigError naming the group."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise ConfigError(
            f"could not build {what}: {e}", fix=f"check the {what}.* values (conf/{what}/)"
        ) from None


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def config_error(error: BaseException) -> UserError:
    """What Hydra or OmegaConf raised while composing, as one message and a fix."""
    if isinstance(error, UserError):
        return error
    if isinstance(error, OverrideParseException):
        return ConfigError(
            f"cannot read the override {error.override!r} ({first_line(error)}).",
            fix="write key=value; quote a value with spaces or special characters, e.g. "
            "'data.root=\"/my data/cifar\"'",
        )
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, option = str(error.missing_cfg_file).rpartition("/")
        if group and error.options:
            choices = ", ".join(f"{group}={c}" for c in error.options)
            fix = f"use one of: {choices} (conf/{group}/)"
            return ConfigError(f"{group}={option} is not an option of the {group} group.", fix)
    cause = error.__cause__ if isinstance(error, ConfigCompositionException) else error
    if isinstance(cause, ConfigKeyError | AttributeError) and getattr(cause, "full_key", None):
        key = cause.full_key
        return ConfigError(
            f"{key} is not a config key.",
            fix="check its spelling against `--cfg job`; to add a new key anyway, "
            f"write +{key}=...",
        )
    if isinstance(cause, ValidationError | OmegaConfBaseException) and cause.full_key:
        return ConfigError(
            f"{cause.full_key}: {first_line(cause)}",
            fix="check the value, or the ${...} reference (an existing key, e.g. ${optim.lr}, "
            "or a resolver)",
        )
    if isinstance(cause, OmegaConfBaseException):
        return ConfigError(first_line(cause), fix="check the ${...} references in the config")
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return ConfigError(
        lines[0] if lines else type(error).__name__, fix="; ".join(lines[1:3]) or "see --help"
    )


def _groups_of(config_name: str) -> set[str]:
    """The config groups a command's config composes (its defaults list, and train's)."""
    defaults = OmegaConf.load(Path(CONFIG_DIR, f"{config_name}.yaml")).get("defaults") or []
    names = set()
    for entry in defaults:
        name = next(iter(entry)) if isinstance(entry, Mapping) else str(entry)
        names.add(name.removeprefix("override ").strip("/"))
    return names | (_groups_of("train") if "train" in names else set())


def parse_overrides(args: Sequence[str]) -> list[Override]:
    """The ``key=value`` arguments, read by Hydra's own parser; flags and what it cannot
    read are left for Hydra to report."""
    parser, parsed = OverridesParser.create(), []
    for arg in args:
        if not arg.startswith("-"):
            with contextlib.suppress(OverrideParseException):
                parsed.extend(parser.parse_overrides([arg]))
    return parsed


def _foreign_group(config_name: str, args: Sequence[str]) -> ConfigError | None:
    """A ``group=option`` argument for a group this command does not use, if there is one."""
    groups = _groups_of(config_name)
    for override in parse_overrides(args):
        key = override.key_or_group
        if Path(CONFIG_DIR, key).is_dir() and key not in groups and not key.startswith("hydra"):
            arg = override.input_line
            return ConfigError(
                f"{arg}: this command takes no {key} option (conf/{config_name}.yaml has no "
                f"{key} group).",
                fix=f"drop {arg}; `--help` lists what this command takes",
            )
    return None


def run_hydra(
    hydra_main: Callable[[], Any], config_name: str = "train", switches: Sequence[str] = ()
) -> None:
    """Call a ``@hydra.main`` function; a composition error is one message and exit code 2.

    ``HYDRA_FULL_ERROR`` makes Hydra raise what it caught instead of printing its own report,
    so the exception itself (its type, its key) says what went wrong. ``switches``: nodes with
    an ``enabled`` key that ``NODE=true|false`` turns on or off (``corruptions=true``).
    """
    answer_version(sys.argv[1:])
    sys.argv[1:] = [switch_override(arg, switches) for arg in sys.argv[1:]]
    os.environ["HYDRA_FULL_ERROR"] = "1"
    _quiet_known_noise()
    with exit_on_user_error():
        try:
            hydra_main()
        except JobFailed:
            sys.exit(1)  # its message is out already
        except (HydraException, OmegaConfBaseException) as e:
            composing = isinstance(e, ConfigCompositionException)
            foreign = composing and _foreign_group(config_name, sys.argv[1:])
            raise (foreign or config_error(e)) from None


def switch_override(arg: str, switches: Sequence[str]) -> str:
    """``NODE=true`` → ``NODE.enabled=true`` for a switch node; any other argument as it is.
    Hydra would replace the whole node with the bool, and ``NODE.images=…`` then fails."""
    key, _, value = arg.partition("=")
    if key in switches and value.lower() in ("true", "false"):
        return f"{key}.enabled={value.lower()}"
    return arg


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the commands that take flags (report, airbench_compare): a bad argument is
    a ConfigError — one message, its fix, exit code 2 — as a bad override is for the others."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(
            f"{message}.", fix=f"{self.format_usage().strip()} (--help says what each one is)"
        )


def answer_shell_completion(argv: Sequence[str], config_name: str) -> None:
    """``-sc install=bash`` and the queries its script makes, for a command that composes its
    config itself (summary, show_aug, reproduce): Hydra's completion of ``config_name``, as
    the ``@hydra.main`` commands have it; exit 0."""
    if not {"-sc", "--shell-completion"} & set(argv):
        return
    import hydra

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
    def complete(cfg: DictConfig) -> None:  # never called: -sc answers before any run
        pass

    saved, sys.argv = sys.argv, [sys.argv[0], *argv]
    try:
        complete()
    finally:
        sys.argv = saved
    sys.exit(0)


def answer_version(argv: Sequence[str]) -> None:
    """Every command's ``--version``: print :func:`versions` and exit 0."""
    if "--version" in argv:
        print(versions())
        sys.exit(0)


def versions() -> str:
    """``--version``: ours, and what our numbers depend on (read without importing torch)."""
    from importlib.metadata import PackageNotFoundError, version

    from cifar_lightning import __version__

    parts = [f"cifar-lightning {__version__}"]
    for package in ("torch", "lightning", "hydra-core"):
        with contextlib.suppress(PackageNotFoundError):
            parts.append(f"{package} {version(package)}")
    spec = importlib.util.find_spec("torch")
    torch_version = Path(spec.origin).parent / "version.py" if spec and spec.origin else None
    with contextlib.suppress(OSError, TypeError):
        found = re.search(r"^cuda[^=]*=\s*'([^']+)'", torch_version.read_text(), re.MULTILINE)
        parts.append(f"CUDA {found.group(1)}" if found else "CUDA none (a CPU build of torch)")
    return ", ".join(parts)


def batched_aug_options(conf: str | Path | None = None) -> list[str]:
    """The ``aug=`` options whose yaml has a ``batched:`` node (so the device loader takes them)."""
    names = []
    for path in sorted(Path(conf or CONFIG_DIR, "aug").glob("*.yaml")):
        node = OmegaConf.load(path)
        if isinstance(node, DictConfig) and node.get("batched") is not None:
            names.append(path.stem)
    return names


def batched_augmentation(cfg: DictConfig, needed_by: str | None = None) -> Any:
    """The run's batched augmentation when ``data.loader=device`` or ``auto`` (or
    ``needed_by``, the benchmark) can use it, else None; for ``device`` (and the benchmark) an
    aug without a ``batched:`` node is refused rather than silently swapped for another."""
    loader = cfg.data.get("loader", "classic")
    if needed_by is None and loader == "classic":
        return None
    node = cfg.aug.get("batched")
    if node is None and needed_by is None and loader == "auto":
        return None  # data.loader=auto then takes the classic loader
    if node is None:
        name = chosen_option("aug")
        which = f"aug={name}" if name else "the chosen aug"
        works = ", ".join(f"aug={o}" for o in batched_aug_options())
        fix = f"pick an aug the device loader runs: {works}"
        if needed_by is None:
            fix = f"drop data.loader=device to run {which} on the classic loader, or {fix}"
        raise ConfigError(
            f"{which} has no batched form (no `batched:` node in its yaml), so "
            f"{needed_by or 'data.loader=device'} cannot run it.",
            fix=fix,
        )
    return build(node, "aug")


class _DropNoise(logging.Filter):
    NOISE = ("Tip: For seamless cloud logging", "Trainer already configured with model summary")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


def lightning_logs_once() -> None:
    """Importing Lightning gives the ``lightning`` logger a stderr handler of its own, while its
    records also reach the root logger, which Hydra has given a console handler: every line
    printed twice (``INFO: Seed set to 42`` and Hydra's ``[…][INFO] - Seed set to 42``). Called
    once a command has imported Lightning, this drops Lightning's handler where the root logger
    has one, so each line prints once, in Hydra's format, and reaches the run's log file."""
    if not logging.getLogger().handlers:
        return
    own = logging.getLogger("lightning")
    for handler in list(own.handlers):
        if type(handler) is logging.StreamHandler:
            own.removeHandler(handler)


def _quiet_known_noise() -> None:
    """Drop exact, known noise: Lightning's advert and a notice about our chosen summary
    (filters act on the emitting logger), alembic's set-up chatter under Optuna, a schema
    notice for our launcher configs that share the plugins' names on purpose, and Lightning
    2.6 calling a helper torch >= 2.10 deprecated."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
