"""`python -m cifar_lightning.predict` / `cifar-predict`: the command line of
cifar_lightning/run/predict.py.

Imports neither torch nor Lightning: ``--help``, ``--cfg``, ``--version`` and a config error
answer in about a second; the work's code is imported once the config is composed.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.run.checks import check_prediction
from cifar_lightning.run.config import CONFIG_DIR, lightning_logs_once, run_hydra


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def hydra_main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        check_prediction(cfg)  # a bad value answers before torch loads
    from cifar_lightning.run.predict import run

    lightning_logs_once()
    run(cfg)


def main() -> None:
    """``--json`` is shorthand for ``json=true`` (Hydra has no flags of ours)."""
    if "--json" in sys.argv[1:]:
        sys.argv = [a for a in sys.argv if a != "--json"] + ["json=true"]
    run_hydra(hydra_main, "predict")


if __name__ == "__main__":
    main()
