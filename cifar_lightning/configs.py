"""Where the Hydra configs live, and the resolvers they use.

The configs sit at the repo root (``conf/``) so a newcomer finds them next to the code; a
wheel carries the same tree inside the package (``cifar_lightning/conf``). Every entry point
asks this module for the directory so both layouts work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from cifar_lightning.distributed import gpus_per_node, processes_per_node, shared_claim
from cifar_lightning.errors import ConfigError, UserError
from cifar_lightning.sweeps import parallel_jobs

_PACKAGE_DIR = Path(__file__).resolve().parent


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
    """Reserve a fresh run directory, adding ``-1``, ``-2`` … when ``path`` is taken.

    Two runs started within the same second would otherwise share (and overwrite) one
    timestamped directory. ``mkdir`` without ``exist_ok`` is atomic, so concurrent processes
    cannot claim the same name. The processes of one distributed launch (torchrun) share
    a single claim: see :mod:`cifar_lightning.distributed`.
    """
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
    """``${uint8:${data.mean}}``: colours given as fractions (like data.mean) in pixel values.

    Augmentation pipelines run on uint8 images, so a fill of "the dataset mean" must be given
    in 0..255; deriving it from ``data.mean`` keeps the two in step.
    """
    return [round(float(v) * 255) for v in values]


def register_resolvers() -> None:
    """Idempotent: safe to call from every entry point and test."""
    if not OmegaConf.has_resolver("claim_dir"):
        # use_cache: Hydra resolves hydra.run.dir more than once; all must see one claim.
        OmegaConf.register_new_resolver("claim_dir", claim_dir, use_cache=True)
    if not OmegaConf.has_resolver("uint8"):
        OmegaConf.register_new_resolver("uint8", uint8)
    # Sweeps: ${mul:${optim.lr},10} scales a search range around the chosen optimizer's
    # default; ${parallel_jobs:} is how many joblib jobs this machine runs at once.
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
    if not OmegaConf.has_resolver("parallel_jobs"):
        OmegaConf.register_new_resolver("parallel_jobs", parallel_jobs)
    # The submitit launchers ask the cluster for what the trainer will use.
    if not OmegaConf.has_resolver("processes_per_node"):
        OmegaConf.register_new_resolver("processes_per_node", processes_per_node)
        OmegaConf.register_new_resolver("gpus_per_node", gpus_per_node)


def compose_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose the config the way ``python -m cifar_lightning.train`` would, for tests and tools.

    ``hydra.*`` interpolations are not available in the result (there is no Hydra run), so
    callers set ``paths.output_dir`` themselves.
    """
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))


def compose_for_tool(argv: Sequence[str], config_name: str) -> tuple[DictConfig, dict[str, str]]:
    """The config a command-line tool (summary, show_aug) runs with, and the group choices.

    ``key=value`` and ``group=option`` arguments work as for training, but there is no Hydra
    run: nothing is written and no run directory is made. A bad argument becomes one
    :class:`ConfigError` (Hydra's own message, which lists a group's options).
    """
    register_resolvers()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(argv), return_hydra_config=True)
    except HydraException as e:
        problem = str(e).split("\nConfig search path:")[0].strip()
        raise ConfigError(
            problem, fix="arguments are key=value or group=option, as for train"
        ) from None
    choices = {k: str(v) for k, v in cfg.hydra.runtime.choices.items() if v is not None}
    with open_dict(cfg):
        del cfg["hydra"]  # its run-dir interpolations would claim a directory if resolved
    return cfg, choices


def chosen_option(group: str) -> str | None:
    """The option picked for a config group in this Hydra run (``aug=crop_flip`` → "crop_flip").

    None outside a Hydra run (a config composed by :func:`compose_config`), where Hydra keeps
    no record of the choices.
    """
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return str(choice) if choice is not None else None


def build(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with errors a user can act on.

    Hydra wraps whatever a constructor raises; a :class:`UserError` from our own code is
    unwrapped so its message reaches the user as written, and any other failure (a typo in
    a key, a wrong type) becomes one :class:`ConfigError` naming the config group.
    """
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
