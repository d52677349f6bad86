"""`python -m cifar_lightning.train` / `cifar-train`: the command line of
cifar_lightning/run/train.py.

Imports neither torch nor Lightning: ``--help``, ``--cfg``, ``--version`` and a config error
answer in about a second; the training code is imported once a run really starts.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.run.config import CONFIG_DIR, lightning_logs_once, parse_overrides, run_hydra


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from cifar_lightning.run.train import run

    lightning_logs_once()
    return run(cfg)


def main() -> None:
    """``resume=RUN_DIR`` is expanded to that run's own command line before Hydra composes it
    (run/resume.py, which reads checkpoints: imported only for it)."""
    if {o.key_or_group for o in parse_overrides(sys.argv[1:])} & {"resume", "ckpt_path"}:
        from cifar_lightning.run import resume

        with exit_on_user_error():
            sys.argv = [sys.argv[0], *resume.expand_argv(sys.argv[1:])]
    run_hydra(hydra_main)


if __name__ == "__main__":
    main()
