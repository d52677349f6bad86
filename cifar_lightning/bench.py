"""`python -m cifar_lightning.bench` / `cifar-bench`: the command line of
cifar_lightning/tools/bench.py.

Imports neither torch nor Lightning: ``--help``, ``--cfg``, ``--version`` and a config error
answer in about a second; the work's code is imported once the config is composed and checked.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cifar_lightning.run.config import CONFIG_DIR, lightning_logs_once, run_hydra


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
def hydra_main(cfg: DictConfig) -> None:
    from cifar_lightning.tools.bench import run

    lightning_logs_once()
    run(cfg)


def main() -> None:
    run_hydra(hydra_main, "bench")


if __name__ == "__main__":
    main()
