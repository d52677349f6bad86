"""One run, several processes: every rank must write into the same run directory.

Lightning's DDP launcher re-runs the command with rank 0's ``hydra.run.dir``; under torchrun,
srun or a process per node each process would claim its own. Under torchrun rank 0 claims it and
hands the name over torchrun's store; elsewhere the run stops and asks for one directory."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from datetime import timedelta

import lightning as L
from lightning.fabric.plugins.environments.slurm import _is_srun_used
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import OmegaConf

from cifar_lightning.errors import ConfigError

# How long ranks 1… wait for rank 0 to name the run directory (it may still be importing).
_HANDOFF_TIMEOUT = timedelta(minutes=5)
# Every rank claims its directories in the same order: numbered, each gets its own store key.
_claim_numbers = itertools.count()


def outside_launcher() -> str | None:
    """Which outside launcher started this process as one of several, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun"
    srun = _is_srun_used() and int(os.environ["SLURM_NTASKS"]) > 1  # Lightning's own test
    if srun and "SUBMITIT_EXECUTOR" not in os.environ:  # submitit pickles the dir for all tasks
        return "srun"
    if "NODE_RANK" in os.environ:  # Lightning's hand-started multi-node launch
        return "a process per node"
    return None


def shared_claim(path: str, claim: Callable[[str], str]) -> str:
    """``claim(path)`` once for all the processes of one launch; every process gets its name."""
    launcher = outside_launcher()
    if launcher is None:
        return claim(path)
    if launcher == "torchrun" and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return _claim_through_torchrun_store(path, claim)
    raise ConfigError(
        f"this process was started by {launcher} as one of several, and each would claim its "
        "own run directory.",
        fix="give every process the same one, e.g. hydra.run.dir=outputs/ddp-$SLURM_JOB_ID "
        "(or launch with `-m hydra/launcher=submitit_slurm`, which handles it)",
    )


def _claim_through_torchrun_store(path: str, claim: Callable[[str], str]) -> str:
    # torchrun's agent hosts a TCPStore at MASTER_ADDR:MASTER_PORT for the whole launch: a key
    # there reaches every rank on every node, and dies with the launch (no stale names).
    from torch.distributed import TCPStore

    address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = TCPStore(address, port, is_master=False, timeout=_HANDOFF_TIMEOUT)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    key = f"cifar_lightning/claim/{attempt}/{next(_claim_numbers)}"
    if int(os.environ["RANK"]) == 0:
        claimed = claim(path)
        store.set(key, claimed)
        return claimed
    return store.get(key).decode()


def check_launch(trainer: L.Trainer, in_sweep: bool) -> None:
    """Refuse DDP's script re-launch inside a sweep before it starts a second sweep per rank."""
    if in_sweep and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        raise ConfigError(
            "trainer.strategy=ddp starts the other ranks by re-running the command line, which "
            "inside a sweep (-m) would re-run the whole sweep once per rank.",
            fix="in a local sweep use trainer.strategy=ddp_spawn; on SLURM use "
            "hydra/launcher=submitit_slurm (it starts one task per device)",
        )


def processes_per_node(devices: object) -> int:
    """Processes (one per device) per node, for a cluster launcher. ``auto`` and ``-1`` count
    as one: the cluster needs a number before the job sees the node (say ``trainer.devices=N``)."""
    if isinstance(devices, list | tuple) or OmegaConf.is_list(devices):
        return len(devices)
    text = str(devices).strip()
    if "," in text:  # Lightning's "0,1" form
        return len([d for d in text.split(",") if d.strip()])
    return int(text) if text.isdigit() and int(text) > 0 else 1


def gpus_per_node(accelerator: str, devices: object) -> int:
    return 0 if str(accelerator) == "cpu" else processes_per_node(devices)
