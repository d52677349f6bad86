"""Where the Hydra configs live, and the resolvers they use.

The configs sit at the repo root (``conf/``) so a newcomer finds them next to the code; a
wheel carries the same tree inside the package (``cifar_lightning/conf``). Every entry point
asks this module for the directory so both layouts work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

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


def register_resolvers() -> None:
    """Idempotent: safe to call from every entry point and test."""
    if not OmegaConf.has_resolver("claim_dir"):
        # use_cache: Hydra resolves hydra.run.dir more than once; all must see one claim.
        OmegaConf.register_new_resolver("claim_dir", claim_dir, use_cache=True)
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
