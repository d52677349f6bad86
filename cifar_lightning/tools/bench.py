"""``python -m cifar_lightning.bench``: how fast each way of feeding the net trains, side by side.

``mode=train`` (the default) times training images/s in one process, with the same model, data,
batch size and optimizer, for (a) ``classic``: the seeds' loop (PIL images, the aug's per-image
transforms, DataLoader workers, fp32, plain PyTorch); (b) ``plain``: plain PyTorch over our device
loader at the run's precision and speed switches (``channels_last``, ``compile``); (c)
``lightning``: our LightningModule in a Trainer over the same full batches as (b), in the same
order, logging as in training, without checkpoints or validation. It prints images/s, ms/step,
the ratios, Lightning's overhead ((c) − (b), ms/step) and model FLOPs utilisation against a peak
it names. ``mode=aug`` times the augmentation alone, per CPU core: per-image PIL, per-image tensor
(``data.loader=classic``) and batched. The last line printed is one JSON object with every
figure, also saved as ``outputs/bench/<date>/<time>/bench.json``.
"""

from __future__ import annotations

import copy
import gc
import itertools
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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

from cifar_lightning.data.batched_aug import Normalize
from cifar_lightning.data.datamodule import ArrayDataset, CIFAR10DataModule, train_transform
from cifar_lightning.data.device_loader import DeviceLoader, ResidentArrays, ShardSampler
from cifar_lightning.errors import ConfigError, exit_on_user_error
from cifar_lightning.run.config import batched_augmentation, build, chosen_option
from cifar_lightning.run.trainer import (
    ONE_DEVICE,
    SIDE_RUN,
    device_name,
    make_trainer,
    pick_device,
    resolve_precision,
)

log = logging.getLogger(__name__)
Run = tuple[int, float, dict[str, Any]]

LOOPS = {
    "classic": "(a) classic: PIL + DataLoader workers, fp32",
    "plain": "(b) plain PyTorch, device loader",
    "lightning": "(c) Lightning Trainer, device loader",
}
AUTOCAST = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}

# Dense (no sparsity) 16-bit tensor-core peaks in TFLOP/s, from NVIDIA's data sheets: bf16
# where the GPU has it, fp16 on V100/T4. Most specific name first ("H100 PCIe" before "H100").
GPU_PEAK_TFLOPS = (
    *(("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4)),  # H100: SXM5
    *(("H200 NVL", 835.0), ("H200", 989.4), ("A100", 312.0), ("L40S", 362.0)),  # H200: SXM
    *(("L4", 121.0), ("A10", 125.0), ("V100", 125.0), ("T4", 65.0)),
)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so the clock measures it (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


class PILArrays(ArrayDataset):
    """torchvision's CIFAR10 as the seeds used it: a PIL image per item, then the transform."""

    def __getitem__(self, i: int) -> tuple[Any, int]:
        j = self.indices[i]
        return self.transform(Image.fromarray(self.images[j])), int(self.labels[j])


def endless(loader) -> Iterator:
    """Batches across epochs, each epoch reshuffled the way Lightning does it (``set_epoch``)."""
    for epoch in itertools.count():
        set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        yield from loader


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


class Bench:
    """Everything the three loops share: data, model config, device, precision; each loop
    returns the images and seconds of its timed steps, and what it ran with."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.device = pick_device(str(cfg.trainer.accelerator), "trainer.accelerator")
        b, on_gpu = cfg.bench, self.device.type == "cuda"
        self.warmup = int(b.warmup_steps if b.warmup_steps is not None else 30 if on_gpu else 2)
        self.steps = int(b.steps if b.steps is not None else 300 if on_gpu else 8)
        if self.warmup < 0 or self.steps < 1:
            raise ConfigError(
                f"bench.warmup_steps={self.warmup} / bench.steps={self.steps}: need "
                "warmup_steps >= 0 and steps >= 1."
            )
        self.accelerator = "gpu" if on_gpu else "cpu"
        self.precision = str(resolve_precision(cfg.trainer.precision, self.accelerator))
        if self.precision not in AUTOCAST:
            raise ConfigError(
                f"trainer.precision={self.precision} is not one the benchmark runs.",
                fix=f"use one of trainer.precision={', '.join(AUTOCAST)} (or auto)",
            )
        self.batched = batched_augmentation(cfg, needed_by="the benchmark's device loader")
        self.datamodule: CIFAR10DataModule = build(cfg.data, "data", aug=None)
        self.datamodule.prepare_data()
        self.datamodule.setup("fit")
        self.train = self.datamodule.train_set
        self.batch_size = self.datamodule.batch_size
        self.mean, self.std = self.datamodule.mean, self.datamodule.std
        self.resident = ResidentArrays()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)

    def fresh_model(self) -> L.LightningModule:
        """The run's LightningModule with the same initial weights each time."""
        torch.manual_seed(self.cfg.seed)
        return build(self.cfg.model, "model")

    def device_loader(self) -> DeviceLoader:
        """Our device loader over the training split; full batches so every step is alike."""
        subset = torch.from_numpy(np.asarray(self.train.indices, dtype=np.int64))
        return DeviceLoader(
            self.resident.get(self.train.images, self.device),
            self.resident.get(self.train.labels, self.device),
            subset,
            batch_size=self.batch_size,
            sampler=ShardSampler(len(subset), shuffle=True, seed=self.cfg.seed),
            normalize=Normalize(self.mean, self.std),
            augment=self.batched,
            seed=self.cfg.seed,
            drop_last=True,
        )

    def time_loop(
        self, net: nn.Module, batches: Iterator, autocast: torch.dtype | None
    ) -> tuple[int, float]:
        """The loop everyone writes by hand: images and seconds over the steps after warm-up."""
        device, warmup = self.device, self.warmup
        optimizer = build(self.cfg.optim, "optim")(params=net.parameters())
        scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
        net.train()
        images, start = 0, 0.0
        for step in range(warmup + self.steps):
            if step == warmup:
                synchronize(device)
                start = time.perf_counter()
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss = self.criterion(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if step >= warmup:
                images += len(y)
        synchronize(device)
        return images, time.perf_counter() - start

    def classic(self) -> Run:
        train, workers = self.train, self.datamodule.num_workers
        transform = self.batched.per_image(32, self.mean, self.std)
        loader = DataLoader(
            PILArrays(train.images, train.labels, transform, train.indices),
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
            images, seconds = self.time_loop(net, batches, None)
        finally:
            # Stop the workers now: left running, they would compete with the next loops.
            batches.close()
            del batches, loader
            gc.collect()
        extra = {"precision": "32-true", "workers": workers, "transform": pipeline_steps(transform)}
        return images, seconds, extra

    def plain(self) -> Run:
        switches = build(self.cfg.speed, "speed")
        net = switches.compiled(switches.layout(self.fresh_model().net.to(self.device)))
        autocast = AUTOCAST[self.precision]
        images, seconds = self.time_loop(net, endless(self.device_loader()), autocast)
        return images, seconds, {"precision": self.precision}

    def lightning(self) -> Run:
        model = self.fresh_model()
        timer = StepTimer(self.warmup, self.steps, self.device)
        trainer = make_trainer(
            self.cfg.trainer,
            [timer, build(self.cfg.speed, "speed")],
            default_root_dir=self.cfg.paths.output_dir,
            accelerator=self.accelerator,
            precision=self.precision,
            max_steps=self.warmup + self.steps + 1,  # one more: the clock stops as it starts
            enable_progress_bar=bool(self.cfg.bench.progress_bar),
            **SIDE_RUN,  # training only, on one device, whatever the training config says
            **ONE_DEVICE,
            fast_dev_run=False,
            limit_val_batches=0,
            val_check_interval=None,
        )
        with warnings.catch_warnings():
            # The benchmark trains only; the LightningModule's validation_step stays unused.
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`")
            trainer.fit(model, datamodule=BenchData(self))
        return timer.images, timer.seconds, {"precision": self.precision}


class BenchData(L.LightningDataModule):
    """The Lightning loop's datamodule: the bench's own device loader, so (b) and (c) see the
    same batches, and the run's data for what a model asks of ``trainer.datamodule`` (the
    speedrun net's whitening sample)."""

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.bench = bench

    def train_dataloader(self) -> DeviceLoader:
        return self.bench.device_loader()

    def sample_train_images(self, n: int) -> torch.Tensor:
        return self.bench.datamodule.sample_train_images(n)


def run_train(cfg: DictConfig) -> dict[str, Any]:
    loops = list(cfg.bench.loops)
    if not loops or any(loop not in LOOPS for loop in loops):
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
        images, seconds, extra = getattr(bench, name)()
        results[name] = {
            "images_per_s": round(images / seconds, 1),
            "ms_per_step": round(1000 * seconds / bench.steps, 3),
            "mfu": images / seconds * flops / peak,
            "images": images,
            **extra,
        }
    ratios = {
        f"{a}_vs_{b}": round(results[a]["images_per_s"] / results[b]["images_per_s"], 3)
        for a, b in (("plain", "classic"), ("lightning", "classic"), ("lightning", "plain"))
        if a in results and b in results
    }
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
    """Augmentation alone, on the CPU, on ``bench.aug_threads`` torch threads, put back after:
    a caller in the same process (a notebook, the tests) must not train on one thread then."""
    threads = int(cfg.bench.aug_threads)
    if threads < 1:
        raise ConfigError(f"bench.aug_threads={threads} must be at least 1.")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_aug(cfg, threads)
    finally:
        torch.set_num_threads(before)


def _per_image_rate(pipeline: Callable[[int], Any], n: int) -> float:
    for i in range(min(n, 64)):  # warm-up
        pipeline(i)
    start = time.perf_counter()
    for i in range(n):
        pipeline(i)
    return n / (time.perf_counter() - start)


def _batched_rate(loader: DeviceLoader, min_seconds: float) -> float:
    """Whole passes over the images until ``min_seconds`` have gone by: one pass is over in
    well under a second, where a neighbour's load on a shared machine swings the figure by a
    third (the per-image pipelines run for seconds already)."""
    for _ in zip(range(2), loader, strict=False):  # warm-up
        pass
    start, count = time.perf_counter(), 0
    while count == 0 or time.perf_counter() - start < min_seconds:
        count += sum(len(y) for _, y in loader)
    return count / (time.perf_counter() - start)


def _run_aug(cfg: DictConfig, threads: int) -> dict[str, Any]:
    batched = batched_augmentation(cfg, needed_by="the benchmark's batched pipeline")
    datamodule: CIFAR10DataModule = build(cfg.data, "data", aug=None)
    datamodule.prepare_data()
    datamodule.setup("fit")
    train = datamodule.train_set
    mean, std, bs = datamodule.mean, datamodule.std, datamodule.batch_size
    n = min(int(cfg.bench.aug_images), len(train))
    images, labels = train.images[train.indices[:n]], train.labels[train.indices[:n]]
    pil = batched.per_image(32, mean, std)
    aug = train_transform(build(cfg.aug.pipeline, "aug"), mean, std)
    tensor_set = ArrayDataset(images, labels, aug)
    loader = DeviceLoader(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels),
        None,
        batch_size=bs,
        sampler=ShardSampler(n, shuffle=True, seed=cfg.seed),
        normalize=Normalize(mean, std),
        augment=batched,
        seed=cfg.seed,
    )
    rates = {
        "pil": _per_image_rate(lambda i: pil(Image.fromarray(images[i])), n),
        "tensor": _per_image_rate(lambda i: tensor_set[i], n),
        "batched": _batched_rate(loader, float(cfg.bench.aug_batched_seconds)),
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
    if cfg.mode not in ("train", "aug"):
        raise ConfigError(
            f"mode={cfg.mode} is not a benchmark mode.", fix="use mode=train or mode=aug"
        )
    result = run_train(cfg) if cfg.mode == "train" else run_aug(cfg)
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
        base = result["loops"].get("classic", {}).get("images_per_s")
        for name, r in result["loops"].items():
            table.add_row(
                LOOPS[name],
                r["precision"],
                f"{r['images_per_s']:,.0f}",
                f"{r['ms_per_step']:.2f}",
                f"{r['images_per_s'] / base:.2f}" if base else "–",
                f"{100 * r['mfu']:.2f}%" if math.isfinite(r["mfu"]) else "–",
            )
        console.print(table)
        if (overhead := result["lightning_overhead_ms_per_step"]) is not None:
            console.print(f"Lightning overhead: {overhead:+.3f} ms/step ((c) − (b))")
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
            rate = r["images_per_s_per_core"]
            table.add_row(r["what"], f"{rate:,.0f}", f"{rate / base:.2f}")
        console.print(table)
    print(json.dumps(result), flush=True)  # the last line: every figure, for scripts


def run(cfg: DictConfig) -> None:
    """``cifar-bench`` with its composed config (cifar_lightning/bench.py)."""
    with exit_on_user_error():
        print_report(bench(cfg))
