"""``python -m cifar_lightning.bench``: how fast each way of feeding the net trains, side by side.

``mode=train`` (the default) measures training images/s in one process, on the same model,
data, batch size and optimizer, for

  (a) ``classic``: the loop the seed projects wrote — a torchvision Dataset of PIL images, the
      aug's per-image transforms (torchvision's classic ones), DataLoader workers, fp32,
      plain PyTorch;
  (b) ``plain``: a plain PyTorch loop over our device loader, at the run's precision and with
      its speed switches (``channels_last``, ``compile``);
  (c) ``lightning``: our LightningModule in a Lightning Trainer over the same device loader,
      logging as in training (no checkpoints, no validation),

and prints images/s, ms/step, the ratios, Lightning's overhead ((c) − (b), ms per step) and
model FLOPs utilisation against the device's peak, saying which peak it assumed. (b) and (c)
see the same batches in the same order, full batches only.

``mode=aug`` times the augmentation alone, per CPU core: the per-image PIL pipeline against
the batched ops (and the per-image tensor pipeline that ``data.loader=classic`` runs).

The last line printed is one JSON object with every figure; it is also saved as
``bench.json`` in the run directory (``outputs/bench/<date>/<time>/``).
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision.datasets import VisionDataset

from cifar_lightning.data import batched_aug
from cifar_lightning.data.batched_aug import Normalize
from cifar_lightning.data.datamodule import CIFAR10DataModule
from cifar_lightning.data.datasets import ArrayDataset
from cifar_lightning.data.device_loader import DeviceLoader, EpochSampler, ResidentArrays
from cifar_lightning.data.transforms import train_transform
from cifar_lightning.errors import ConfigError, exit_on_user_error
from cifar_lightning.run.config import CONFIG_DIR, build, chosen_option, run_hydra
from cifar_lightning.run.trainer import device_name, make_trainer, resolve_precision

log = logging.getLogger(__name__)

LOOPS = ("classic", "plain", "lightning")
AUTOCAST = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}

# Dense (no sparsity) 16-bit tensor-core peaks in TFLOP/s, from NVIDIA's data sheets: bf16
# where the GPU has it, fp16 on V100/T4. Most specific name first ("H100 PCIe" before "H100").
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200 NVL", 835.0),
    ("H200", 989.4),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


@dataclass(frozen=True)
class Timing:
    images: int
    steps: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.seconds / self.steps


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so the clock measures it (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick_device(accelerator: str) -> torch.device:
    if accelerator != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", 0)
    if accelerator in ("gpu", "cuda"):
        raise ConfigError(
            f"trainer.accelerator={accelerator} but no CUDA GPU is visible.",
            fix="run on a GPU machine, or use trainer.accelerator=cpu",
        )
    return torch.device("cpu")


def measure_cpu_peak(seconds: float = 1.0, n: int = 1024) -> float:
    """fp32 FLOP/s of a large matmul on the threads torch uses: a CPU's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def device_peak(device: torch.device, declared_tflops: float | None) -> tuple[float, str]:
    """The FLOP/s that model FLOPs utilisation is measured against, and where it came from."""
    name = device_name(device).split(": ", 1)[1]
    if declared_tflops:
        return declared_tflops * 1e12, f"{declared_tflops:g} TFLOP/s, declared (bench.peak_tflops)"
    if device.type == "cuda":
        for key, tflops in GPU_PEAK_TFLOPS:
            if key in name:
                return tflops * 1e12, f"{tflops:g} TFLOP/s: {name}, dense 16-bit tensor-core peak"
        return math.nan, f"unknown for {name}: set bench.peak_tflops"
    flops = measure_cpu_peak()
    threads = torch.get_num_threads()
    return flops, f"{flops / 1e9:.1f} GFLOP/s: {name}, measured fp32 matmul on {threads} threads"


def training_flops_per_image(net: nn.Module, criterion: nn.Module) -> float:
    """Forward + backward FLOPs (convolutions and matmuls, as MFU counts them) per image."""
    net = copy.deepcopy(net).cpu().train()
    x, y = torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        criterion(net(x), y).backward()
    return counter.get_total_flops() / 2


class PILArrays(VisionDataset):
    """torchvision's CIFAR10 as the seeds used it: a PIL image per item, then the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        super().__init__(root=None, transform=transform)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def endless(loader) -> Iterator:
    """Batches across epochs, each epoch reshuffled the way Lightning does it (``set_epoch``)."""
    epoch = 0
    while True:
        set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        yield from loader
        epoch += 1


def time_plain_loop(
    net: nn.Module,
    batches: Iterator,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    autocast: torch.dtype | None,
    warmup: int,
    steps: int,
) -> Timing:
    """The training loop everyone writes by hand; the clock runs over ``steps`` after ``warmup``."""
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    net.train()
    images, start = 0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = criterion(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if step >= warmup:
            images += len(y)
    synchronize(device)
    return Timing(images, steps, time.perf_counter() - start)


class StepTimer(Callback):
    """Times Lightning's training steps ``warmup`` … ``warmup + steps - 1``, start to start."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.images, self.start, self.seconds = 0, 0.0, math.nan

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()
        elif step == self.warmup + self.steps:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.start
        if self.warmup <= step < self.warmup + self.steps:
            self.images += len(batch[1])

    def timing(self) -> Timing:
        return Timing(self.images, self.steps, self.seconds)


class Bench:
    """Everything the three loops share: data, model config, device, precision."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.device = pick_device(str(cfg.trainer.accelerator))
        b, on_gpu = cfg.bench, self.device.type == "cuda"
        self.warmup = int(b.warmup_steps if b.warmup_steps is not None else 30 if on_gpu else 2)
        self.steps = int(b.steps if b.steps is not None else 300 if on_gpu else 8)
        if self.warmup < 0 or self.steps < 1:
            raise ConfigError(
                f"bench.warmup_steps={self.warmup} / bench.steps={self.steps}: need "
                "warmup_steps >= 0 and steps >= 1."
            )
        accelerator = "gpu" if self.device.type == "cuda" else "cpu"
        self.precision = str(resolve_precision(cfg.trainer.precision, accelerator))
        if self.precision not in AUTOCAST:
            raise ConfigError(
                f"trainer.precision={self.precision} is not one the benchmark runs.",
                fix=f"use one of trainer.precision={', '.join(AUTOCAST)} (or auto)",
            )
        self.batched = batched_aug.from_config(cfg, needed_by="the benchmark's device loader")
        self.datamodule: CIFAR10DataModule = build(cfg.data, "data", aug=None)
        self.datamodule.prepare_data()
        self.datamodule.setup("fit")
        train = self.datamodule.train_set
        self.train = train
        self.batch_size = self.datamodule.batch_size
        self.mean, self.std = self.datamodule.mean, self.datamodule.std
        self.resident = ResidentArrays()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)

    def fresh_model(self) -> L.LightningModule:
        """The run's LightningModule with the same initial weights each time."""
        torch.manual_seed(self.cfg.seed)
        return build(self.cfg.model, "model")

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        make = build(self.cfg.optim, "optim")
        return make(params=net.parameters())

    def device_loader(self) -> DeviceLoader:
        """Our device loader over the training split; full batches so every step is alike."""
        train = self.train
        subset = torch.from_numpy(np.asarray(train.indices, dtype=np.int64))
        return DeviceLoader(
            self.resident.get(train.images, self.device),
            self.resident.get(train.labels, self.device),
            subset,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(subset), shuffle=True, seed=self.cfg.seed),
            normalize=Normalize(self.mean, self.std),
            augment=self.batched,
            seed=self.cfg.seed,
            drop_last=True,
        )

    # --- the three loops ------------------------------------------------------------------

    def classic(self) -> tuple[Timing, dict[str, Any]]:
        train = self.train
        transform = self.batched.per_image(32, self.mean, self.std)
        dataset = PILArrays(train.images[train.indices], train.labels[train.indices], transform)
        workers = self.datamodule.num_workers
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )
        net = self.fresh_model().net.to(self.device)
        batches = endless(loader)
        try:
            timing = time_plain_loop(
                net,
                batches,
                self.optimizer(net),
                self.criterion,
                self.device,
                None,
                self.warmup,
                self.steps,
            )
        finally:
            # Stop the workers now: left running, they would compete with the next loops.
            batches.close()
            del batches, loader
            gc.collect()
        extra = {"precision": "32-true", "workers": workers, "transform": pipeline_steps(transform)}
        return timing, extra

    def plain(self) -> tuple[Timing, dict[str, Any]]:
        switches = build(self.cfg.speed, "speed")
        net = switches.compiled(switches.layout(self.fresh_model().net.to(self.device)))
        timing = time_plain_loop(
            net,
            endless(self.device_loader()),
            self.optimizer(net),
            self.criterion,
            self.device,
            AUTOCAST[self.precision],
            self.warmup,
            self.steps,
        )
        return timing, {"precision": self.precision}

    def lightning(self) -> tuple[Timing, dict[str, Any]]:
        model = self.fresh_model()
        timer = StepTimer(self.warmup, self.steps, self.device)
        trainer = make_trainer(
            self.cfg.trainer,
            [timer, build(self.cfg.speed, "speed")],
            default_root_dir=self.cfg.paths.output_dir,
            accelerator="gpu" if self.device.type == "cuda" else "cpu",
            devices=1,
            num_nodes=1,
            strategy="auto",
            precision=self.precision,
            max_steps=self.warmup + self.steps + 1,  # one more: the clock stops as it starts
            max_epochs=-1,
            min_epochs=None,
            min_steps=None,
            max_time=None,
            fast_dev_run=False,
            limit_train_batches=None,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            val_check_interval=None,
            enable_checkpointing=False,
            enable_progress_bar=bool(self.cfg.bench.progress_bar),
            enable_model_summary=False,
            plugins=None,
        )
        with warnings.catch_warnings():
            # The benchmark trains only; the LightningModule's validation_step stays unused.
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`")
            trainer.fit(model, train_dataloaders=self.device_loader())
        return timer.timing(), {"precision": self.precision}


def run_train(cfg: DictConfig) -> dict[str, Any]:
    loops = list(cfg.bench.loops)
    unknown = [loop for loop in loops if loop not in LOOPS]
    if unknown or not loops:
        raise ConfigError(
            f"bench.loops=[{','.join(map(str, loops))}] names no loop or an unknown one.",
            fix=f"pick from {list(LOOPS)}, e.g. bench.loops=[plain,lightning]",
        )
    bench = Bench(cfg)
    probe = bench.fresh_model()
    flops = training_flops_per_image(probe.net, bench.criterion)
    peak, peak_source = device_peak(bench.device, cfg.bench.peak_tflops)
    results: dict[str, dict[str, Any]] = {}
    for name in loops:
        log.info("Timing the %s loop (%d + %d steps)…", name, bench.warmup, bench.steps)
        timing, extra = getattr(bench, name)()
        results[name] = {
            "images_per_s": round(timing.images_per_s, 1),
            "ms_per_step": round(timing.ms_per_step, 3),
            "mfu": timing.images_per_s * flops / peak,
            "images": timing.images,
            **extra,
        }
    ratios = {}
    for a, b in (("plain", "classic"), ("lightning", "classic"), ("lightning", "plain")):
        if a in results and b in results:
            ratios[f"{a}_vs_{b}"] = round(
                results[a]["images_per_s"] / results[b]["images_per_s"], 3
            )
    overhead = None
    if "plain" in results and "lightning" in results:
        overhead = round(results["lightning"]["ms_per_step"] - results["plain"]["ms_per_step"], 3)
    return {
        "mode": "train",
        "device": device_name(bench.device),
        "model": type(probe).__name__,
        "params": probe.num_parameters,
        "data": bench.datamodule.describe().replace(", classic loader", ""),
        "train_images": len(bench.train),
        "aug": chosen_option("aug") or repr(bench.batched),
        "batch_size": bench.batch_size,
        "precision": bench.precision,
        "speed": OmegaConf.to_container(cfg.speed, resolve=True),
        "warmup_steps": bench.warmup,
        "steps": bench.steps,
        "flops_per_image": flops,
        "peak_flops": peak,
        "peak": peak_source,
        "loops": results,
        "ratios": ratios,
        "lightning_overhead_ms_per_step": overhead,
    }


def pipeline_steps(pipeline) -> str:
    """A pipeline on one line: its steps' class names."""
    parts = pipeline.transforms if hasattr(pipeline, "transforms") else pipeline.ops
    return " → ".join(type(t).__name__ for t in parts) or "(none)"


def run_aug(cfg: DictConfig) -> dict[str, Any]:
    """Augmentation alone, on the CPU: per-image PIL, per-image tensor, batched.

    On ``bench.aug_threads`` torch threads, put back afterwards: a caller in the same process
    (a notebook, the test suite) must not train on one thread from then on.
    """
    threads = int(cfg.bench.aug_threads)
    if threads < 1:
        raise ConfigError(f"bench.aug_threads={threads} must be at least 1.")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_aug(cfg, threads)
    finally:
        torch.set_num_threads(before)


def _run_aug(cfg: DictConfig, threads: int) -> dict[str, Any]:
    batched = batched_aug.from_config(cfg, needed_by="the benchmark's batched pipeline")
    datamodule: CIFAR10DataModule = build(cfg.data, "data", aug=None)
    datamodule.prepare_data()
    datamodule.setup("fit")
    train = datamodule.train_set
    n = min(int(cfg.bench.aug_images), len(train))
    images = train.images[train.indices[:n]]
    labels = train.labels[train.indices[:n]]
    mean, std, bs = datamodule.mean, datamodule.std, datamodule.batch_size
    warm = min(n, 64)

    def per_image(pipeline) -> float:
        for i in range(warm):
            pipeline(i)
        start = time.perf_counter()
        for i in range(n):
            pipeline(i)
        return n / (time.perf_counter() - start)

    pil = batched.per_image(32, mean, std)
    tensor_set = ArrayDataset(
        images, labels, train_transform(build(cfg.aug.pipeline, "aug"), mean, std)
    )
    loader = DeviceLoader(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels),
        None,
        batch_size=bs,
        sampler=EpochSampler(n, shuffle=True, seed=cfg.seed),
        normalize=Normalize(mean, std),
        augment=batched,
        seed=cfg.seed,
    )

    def batched_rate() -> float:
        for _ in zip(range(2), loader, strict=False):
            pass
        start = time.perf_counter()
        count = sum(len(y) for _, y in loader)
        return count / (time.perf_counter() - start)

    rates = {
        "pil": per_image(lambda i: pil(Image.fromarray(images[i]))),
        "tensor": per_image(lambda i: tensor_set[i]),
        "batched": batched_rate(),
    }
    pipelines = {
        name: {"images_per_s": round(rate, 1), "images_per_s_per_core": round(rate / threads, 1)}
        for name, rate in rates.items()
    }
    pipelines["pil"]["what"] = f"PIL, per image: {pipeline_steps(pil)}"
    pipelines["tensor"]["what"] = "uint8 tensor, per image: the aug's pipeline (classic loader)"
    pipelines["batched"]["what"] = f"batched, {bs} per batch: {pipeline_steps(batched)} → Normalize"
    return {
        "mode": "aug",
        "device": device_name(torch.device("cpu")),
        "threads": threads,
        "aug": chosen_option("aug") or repr(batched),
        "data": datamodule.describe().replace(", classic loader", ""),
        "images": n,
        "batch_size": bs,
        "pipelines": pipelines,
        "ratios": {
            "batched_vs_pil": round(rates["batched"] / rates["pil"], 2),
            "tensor_vs_pil": round(rates["tensor"] / rates["pil"], 2),
        },
    }


def bench(cfg: DictConfig) -> dict[str, Any]:
    """Run the benchmark the config asks for; returns (and saves) every figure."""
    L.seed_everything(cfg.seed, verbose=False)
    if cfg.mode == "train":
        result = run_train(cfg)
    elif cfg.mode == "aug":
        result = run_aug(cfg)
    else:
        raise ConfigError(
            f"mode={cfg.mode} is not a benchmark mode.", fix="use mode=train or mode=aug"
        )
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_report(result: dict[str, Any]) -> None:
    console = Console(highlight=False)
    if result["mode"] == "train":
        table = Table(
            title=f"Training throughput — {result['model']} ({result['params']:,} params), "
            f"batch {result['batch_size']}, {result['device']}",
        )
        for col in ("loop", "precision", "images/s", "ms/step", "× classic", "MFU"):
            table.add_column(col, justify="left" if col in ("loop", "precision") else "right")
        labels = {
            "classic": "(a) classic: PIL + DataLoader workers, fp32",
            "plain": "(b) plain PyTorch, device loader",
            "lightning": "(c) Lightning Trainer, device loader",
        }
        base = result["loops"].get("classic", {}).get("images_per_s")
        for name, r in result["loops"].items():
            ratio = f"{r['images_per_s'] / base:.2f}" if base else "–"
            table.add_row(
                labels[name],
                r["precision"],
                f"{r['images_per_s']:,.0f}",
                f"{r['ms_per_step']:.2f}",
                ratio,
                f"{100 * r['mfu']:.2f}%" if math.isfinite(r["mfu"]) else "–",
            )
        console.print(table)
        if result["lightning_overhead_ms_per_step"] is not None:
            console.print(
                f"Lightning overhead: {result['lightning_overhead_ms_per_step']:+.3f} ms/step "
                "((c) − (b))"
            )
        console.print(
            f"MFU: {result['flops_per_image'] / 1e6:.1f} MFLOP per image (forward + backward) "
            f"against {result['peak']}"
        )
        console.print(
            f"Data: {result['data']} ({result['train_images']:,} training images), "
            f"aug={result['aug']}; speed={result['speed']}; {result['warmup_steps']} warm-up + "
            f"{result['steps']} timed steps"
        )
    else:
        table = Table(
            title=f"Augmentation only, aug={result['aug']} — {result['device']}, "
            f"{result['threads']} thread(s)"
        )
        for col in ("pipeline", "images/s per core", "× PIL"):
            table.add_column(col, justify="left" if col == "pipeline" else "right")
        base = result["pipelines"]["pil"]["images_per_s_per_core"]
        for r in result["pipelines"].values():
            table.add_row(
                r["what"],
                f"{r['images_per_s_per_core']:,.0f}",
                f"{r['images_per_s_per_core'] / base:.2f}",
            )
        console.print(table)
    # The last line: every figure, for scripts.
    print(json.dumps(result), flush=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
def hydra_main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        print_report(bench(cfg))


def main() -> None:
    """``python -m cifar_lightning.bench``."""
    run_hydra(hydra_main, "bench")


if __name__ == "__main__":
    main()
