"""What a job does differently when it is one of a Hydra sweep's jobs (``-m``): its failure
is recorded and fails it only (``sys.exit`` would take the other jobs down: launchers catch
exceptions, not exits); under joblib on several GPUs it takes a GPU of its own; for Optuna it
returns the number to optimize.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from joblib import effective_n_jobs
from omegaconf import DictConfig

from cifar_lightning.errors import ConfigError, JobFailed, UserError, report
from cifar_lightning.run import record

log = logging.getLogger(__name__)

# Machine-wide (per user), not per sweep: two sweeps running side by side share the GPUs
# evenly instead of both starting on GPU 0.
GPU_LOCK_DIR = Path(tempfile.gettempdir()) / f"cifar-lightning-gpus-{os.getuid()}"


def in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _plugin(kind: str) -> str:
    """The class path of this sweep's ``hydra/launcher`` or ``hydra/sweeper``."""
    return str(HydraConfig.get()[kind].get("_target_", "")) if HydraConfig.initialized() else ""


def parallel_jobs(n_jobs: int | None = None) -> int:
    """How many jobs run at once: ``n_jobs`` in joblib's sense (-1: all CPUs) as a count.

    Without ``n_jobs``, the joblib launcher's default: one job per GPU; without a GPU, one
    per 4 cores (a training job keeps several cores busy by itself — torch's threads, the
    loader workers — so one job per core would only thrash). Optuna's sweeper needs the
    count itself: it asks for that many trials at a time.
    """
    if n_jobs is not None:
        return effective_n_jobs(int(n_jobs))
    gpus = torch.cuda.device_count()
    return gpus if gpus > 0 else max(1, (os.cpu_count() or 1) // 4)


@contextlib.contextmanager
def gpu_slot(num_gpus: int, lock_dir: Path = GPU_LOCK_DIR) -> Iterator[int]:
    """Hold the lowest free slot while the job runs; slot ``k`` is GPU ``k % num_gpus``.

    With no more jobs than GPUs every job gets its own GPU; with twice as many, two per
    GPU, evenly. ``flock`` locks die with the process, so a crashed job frees its slot.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        handle = open(lock_dir / f"slot{slot}.lock", "w")  # noqa: SIM115 (held until the end)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            slot += 1
            continue
        try:
            yield slot % num_gpus
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return


@contextlib.contextmanager
def pinned_to_a_free_gpu(cfg: DictConfig) -> Iterator[None]:
    """Under joblib with several GPUs, run this job on a GPU no other job of ours holds.

    The job's ``trainer.devices`` becomes ``[k]`` (a device index works even after CUDA has
    started in the reused worker process, where ``CUDA_VISIBLE_DEVICES`` would not).
    Applies only when the run would otherwise take one GPU or all (``devices`` 1 or auto).
    """
    num_gpus = torch.cuda.device_count()
    trainer = cfg.trainer
    wants_one = str(trainer.get("devices")) in ("auto", "1") and trainer.get("accelerator") in (
        "auto",
        "gpu",
        "cuda",
    )
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
        if isinstance(error, UserError):
            report(error)  # the message as a single run prints it
            raise JobFailed(error.problem) from error
        raise


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
