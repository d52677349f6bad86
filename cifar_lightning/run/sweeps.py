"""What a job of a Hydra sweep (``-m``) does differently: its failure is recorded and fails it
only (launchers catch exceptions, not ``sys.exit``); under joblib on several GPUs it takes a GPU
of its own; for Optuna it returns the number to optimize."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from joblib import effective_n_jobs
from omegaconf import DictConfig

from cifar_lightning.errors import ConfigError, JobFailed, RunInterrupted, UserError, report
from cifar_lightning.run import record, sweep_resume

log = logging.getLogger(__name__)

# Per user, not per sweep: two sweeps side by side share the GPUs, not both start on GPU 0.
GPU_LOCK_DIR = Path(tempfile.gettempdir()) / f"cifar-lightning-gpus-{os.getuid()}"


def in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _plugin(kind: str) -> str:
    """The class path of this sweep's ``hydra/launcher`` or ``hydra/sweeper``."""
    return str(HydraConfig.get()[kind].get("_target_", "")) if HydraConfig.initialized() else ""


def parallel_jobs(n_jobs: int | None = None) -> int:
    """Jobs at once (Optuna asks that many trials): joblib's ``n_jobs`` as a count, else one per
    GPU, else one per 4 cores (a job's threads and loader workers keep several cores busy)."""
    if n_jobs is not None:
        return effective_n_jobs(int(n_jobs))
    return torch.cuda.device_count() or max(1, (os.cpu_count() or 1) // 4)


@contextlib.contextmanager
def gpu_slot(num_gpus: int, lock_dir: Path = GPU_LOCK_DIR) -> Iterator[int]:
    """Hold the lowest free slot while the job runs; slot ``k`` is GPU ``k % num_gpus``, so the
    jobs share the GPUs evenly. ``flock`` locks die with the process: a crash frees its slot."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in itertools.count():
        handle = open(lock_dir / f"slot{slot}.lock", "w")  # noqa: SIM115 (held until the end)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            handle.close()
    try:
        yield slot % num_gpus
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def pinned_to_a_free_gpu(cfg: DictConfig) -> Iterator[None]:
    """Under joblib on several GPUs, a job set to take one GPU or all gets ``devices=[k]``, one
    no job of ours holds (an index works in a reused worker, ``CUDA_VISIBLE_DEVICES`` would not)."""
    num_gpus, trainer = torch.cuda.device_count(), cfg.trainer
    on_gpu = trainer.get("accelerator") in ("auto", "gpu", "cuda")
    wants_one = on_gpu and str(trainer.get("devices")) in ("auto", "1")
    if not (_plugin("launcher").endswith("JoblibLauncher") and num_gpus > 1 and wants_one):
        yield
        return
    with gpu_slot(num_gpus) as gpu:
        trainer.devices = [gpu]
        log.info("This job runs on GPU %d of %d (one GPU per parallel job).", gpu, num_gpus)
        yield


@contextlib.contextmanager
def sweep_job(cfg: DictConfig) -> Iterator[None]:
    """Run one job of a sweep; record its failure (unless train() did) and fail it only."""
    started = time.perf_counter()
    try:
        with pinned_to_a_free_gpu(cfg):
            yield
    except BaseException as error:
        if not (Path(cfg.paths.output_dir) / record.METRICS_FILE).exists():  # a config error
            failed = record.build(cfg, "failed", started, error=record.describe_error(error))
            record.write(cfg, failed)
        if isinstance(error, RunInterrupted):  # SIGTERM / Ctrl-C: the sweep stops, not the job
            report(error)
            sys.exit(error.exit_code)  # launchers catch exceptions, not SystemExit
        if isinstance(error, UserError):
            report(error)  # the message as a single run prints it
            raise JobFailed(error.problem) from error
        raise


def run_job(cfg: DictConfig, train: Callable[[DictConfig], dict[str, Any]]) -> float | None:
    """One job: trained, continued from its ``last.ckpt``, or (completed in an earlier session
    of the sweep) its recorded result (run/sweep_resume.py)."""
    with sweep_job(cfg):
        task = list(HydraConfig.get().overrides.task)
        results = sweep_resume.continue_job(cfg, task) or train(cfg)
        if results.get("status") == "pruned":  # an Optuna trial the study already knows
            return None
        return optimized_value(cfg, results)


def optimized_value(cfg: DictConfig, results: dict[str, Any]) -> float | None:
    """The metric named by ``optimized_metric``, which ``main`` returns to the sweeper."""
    name = cfg.get("optimized_metric")
    value = results["metrics"].get(name)
    if value is None and name and _plugin("sweeper").endswith("OptunaSweeper"):
        raise ConfigError(
            f"optimized_metric={name} was not logged, so Optuna has nothing to optimize.",
            fix=f"use one of: {', '.join(sorted(results['metrics']))}",
        )
    return value
