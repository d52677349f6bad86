"""The one place a Lightning ``Trainer`` is made: training, evaluate, the LR range test, the
timing warm-up and the benchmark all describe theirs as ``trainer.*`` plus overrides."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from cifar_lightning.errors import ConfigError


def resolve_precision(precision: Any, accelerator: str) -> Any:
    """``auto``: bf16 AMP on a GPU that has it, fp16 AMP on an older GPU, fp32 on CPU."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if not on_gpu:
        return "32-true"
    return "bf16-mixed" if bf16_native() else "16-mixed"


def bf16_native() -> bool:
    """Whether the visible GPUs compute bf16 in hardware (compute capability 8.0, Ampere, on).

    Asked of NVML, not ``torch.cuda.is_bf16_supported()``: that counts emulation (a V100 or T4
    says yes, and runs bf16 slowly) and initialises CUDA here, which Lightning's ``ddp_fork``
    and ``ddp_notebook`` then refuse. Without NVML (not NVIDIA's driver), torch answers."""
    capabilities = nvml_compute_capabilities()
    if capabilities is None:
        return torch.cuda.get_device_capability() >= (8, 0)
    return bool(capabilities) and min(capabilities) >= (8, 0)


def nvml_compute_capabilities() -> list[tuple[int, int]] | None:
    """(major, minor) of each GPU that ``CUDA_VISIBLE_DEVICES`` (by index) leaves visible, from
    the driver's NVML library without a CUDA context; None where NVML cannot say."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint()
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").replace(" ", "")
        indices = range(count.value)
        if visible and all(part.isdigit() for part in visible.split(",")):
            indices = [i for i in map(int, visible.split(",")) if i < count.value]
        capabilities = []
        for i in indices:
            handle, major, minor = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_int()
            if nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                return None
            ask = nvml.nvmlDeviceGetCudaComputeCapability
            if ask(handle, ctypes.byref(major), ctypes.byref(minor)) != 0:
                return None
            capabilities.append((major.value, minor.value))
        return capabilities
    finally:
        nvml.nvmlShutdown()


def trainer_kwargs(trainer: Mapping[str, Any] | DictConfig, **overrides: Any) -> dict[str, Any]:
    """``trainer.*`` as Lightning takes it: plugins built, ``precision: auto`` resolved."""
    if isinstance(trainer, DictConfig):
        trainer = OmegaConf.to_container(trainer, resolve=True)
    kwargs = {**trainer, **overrides}
    precision, accelerator = kwargs.get("precision", "auto"), str(kwargs.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu) asks for a GPU, but torch sees "
            "none on this machine.",
            fix="drop trainer=gpu, or use trainer=cpu; trainer.accelerator=auto (the default) "
            "takes the GPU wherever there is one",
        )
    kwargs["precision"] = resolve_precision(precision, accelerator)
    plugins = kwargs.get("plugins") or []
    plugins = plugins if isinstance(plugins, list) else [plugins]
    kwargs["plugins"] = [instantiate(p) if isinstance(p, Mapping) else p for p in plugins] or None
    return kwargs


# A short run beside the real one (the timing warm-up, the LR range test, the benchmark):
# its own length, no sanity check, nothing saved, summarized or checkpointed.
SIDE_RUN = dict(
    max_epochs=-1, min_epochs=None, min_steps=None, max_time=None, limit_train_batches=None,
    num_sanity_val_steps=0, enable_checkpointing=False, enable_model_summary=False, plugins=None,
)  # fmt: skip
ONE_DEVICE = dict(devices=1, num_nodes=1, strategy="auto")


def make_trainer(
    trainer: Mapping[str, Any] | DictConfig,
    callbacks: Sequence[L.Callback] = (),
    logger: Any = False,
    default_root_dir: str | Path | None = None,
    **overrides: Any,
) -> L.Trainer:
    """``L.Trainer(**trainer, **overrides)``; a value Lightning rejects is a ConfigError."""
    kwargs = trainer_kwargs(trainer, **overrides)
    if kwargs.get("log_every_n_steps") == "auto":  # a few times an epoch, set at train start
        from cifar_lightning.training.callbacks.log_interval import PLACEHOLDER, EpochLogInterval

        kwargs["log_every_n_steps"] = PLACEHOLDER
        callbacks = [*callbacks, EpochLogInterval()]
    try:
        return L.Trainer(
            **kwargs,
            callbacks=list(callbacks),
            logger=logger,
            default_root_dir=None if default_root_dir is None else str(default_root_dir),
        )
    except (TypeError, ValueError, MisconfigurationException) as e:
        raise ConfigError(
            f"trainer: {str(e).strip()}", fix="see lightning.pytorch.Trainer's arguments"
        ) from None


def device_name(device: torch.device) -> str:
    """``cuda: NVIDIA H100 80GB HBM3`` or ``cpu: AMD EPYC …``: what a figure was measured on."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(x for x in lines if x.startswith("model name")).split(":", 1)[1].strip()
    return f"{device.type}: {cpu}"


def pick_device(name: str, key: str = "device") -> torch.device:
    """``auto``: the GPU if there is one, else the CPU; or cpu, gpu, cuda, cuda:1, mps …"""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device("cuda" if name == "gpu" else name)
    except RuntimeError:
        raise ConfigError(f"{key}={name!r} is not a device.", fix="use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{key}={name} asks for a GPU, but no CUDA GPU is visible.",
            fix=f"use {key}=cpu or {key}=auto",
        )
    return device
