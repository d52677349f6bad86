"""Speed switches (channels_last, compile) and training steps free of host syncs."""

from __future__ import annotations

import weakref
from collections import Counter, defaultdict

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.overrides import TorchFunctionMode

import cifar_lightning.run.train as train_module
from cifar_lightning.errors import ConfigError
from cifar_lightning.run.checkpoints import read_checkpoint
from cifar_lightning.run.loggers import events_dir
from cifar_lightning.run.train import train
from cifar_lightning.training.callbacks.speed import compile_options

# Tensor calls that make the host wait for the device when the tensor lives on a GPU. On a
# CPU nothing waits, but the calls are the same: catching them here catches them there.
SYNCING = {"item", "tolist", "__bool__", "__int__", "__float__", "cpu", "numpy"}
SYNCING |= {"nonzero", "unique", "masked_select"}  # output sizes that depend on the values


class _CatchSyncs(TorchFunctionMode):
    """Counts syncing calls on tensors that would live on the GPU.

    On a CPU every tensor is a host tensor, so the mode tracks which ones would be host
    tensors on a GPU too: made by ``.cpu()`` or by ``torch.tensor`` without a device, or
    computed from such tensors only. Reading those back costs nothing.
    """

    def __init__(self, hits: Counter, host: weakref.WeakSet) -> None:
        super().__init__()
        self.hits, self.host = hits, host

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        on_host = bool(tensors) and all(t in self.host for t in tensors)
        # torch.tensor(x, device=...) copies host to device: on a GPU it waits too.
        if (name in SYNCING and not on_host) or (name == "tensor" and "device" in kwargs):
            self.hits[name] += 1
        result = func(*args, **kwargs)
        if isinstance(result, torch.Tensor) and (
            name == "cpu" or on_host or (name == "tensor" and "device" not in kwargs)
        ):
            self.host.add(result)
        return result


class SyncWatch(Callback):
    """Counts syncing calls per training step, from one batch start to the next.

    The window spans the step, its hooks, Lightning's per-batch bookkeeping (progress-bar
    metrics) and the logger's write, and stops at validation.
    """

    def __init__(self) -> None:
        self.per_step: dict[int, Counter] = defaultdict(Counter)
        self._host: weakref.WeakSet = weakref.WeakSet()
        self._mode: _CatchSyncs | None = None

    def _stop(self) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._stop()
        self._mode = _CatchSyncs(self.per_step[trainer.global_step], self._host)
        self._mode.__enter__()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._stop()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop()


@pytest.mark.slow
def test_training_steps_do_not_wait_for_the_device(make_cfg, monkeypatch, tmp_path):
    watch = SyncWatch()
    build_callbacks = train_module.build_callbacks
    monkeypatch.setattr(train_module, "build_callbacks", lambda cfg: [*build_callbacks(cfg), watch])
    out = tmp_path / "run"
    train(
        make_cfg(
            "data.loader=device",
            "data.fake_train_size=160",  # 96 training images at batch 16: 6 steps
            "data.batch_size=16",
            "trainer.log_every_n_steps=3",
            "trainer.enable_progress_bar=true",  # the bar reads the metrics every step
            "trainer.limit_val_batches=1",
            "test.enabled=false",
            f"paths.output_dir={out}",
        )
    )
    steps = sorted(watch.per_step)
    assert steps == list(range(6))
    logging_steps = {s for s in steps if (s + 1) % 3 == 0}
    for step in steps:
        if step not in logging_steps:
            assert not watch.per_step[step], (step, dict(watch.per_step[step]))
    # On the steps the logger writes, the loss is read back once and logged.
    events = EventAccumulator(str(events_dir(out))).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == sorted(logging_steps)
    assert [e.step for e in events.Scalars("train/lr")] == sorted(logging_steps)
    assert len(events.Scalars("train/loss_epoch")) == 1 and len(events.Scalars("train/acc")) == 1


@pytest.mark.slow
def test_channels_last_and_compile_keep_checkpoints_plain(make_cfg):
    results = train(
        make_cfg(
            "data.loader=device",
            "speed.channels_last=true",
            "speed.compile={backend:eager}",  # dynamo's graph capture, without code generation
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "test.enabled=false",
        )
    )
    assert results["status"] == "completed"
    state = read_checkpoint(results["best_checkpoint"])["state_dict"]
    assert not any("_orig_mod" in key for key in state)  # loads into an uncompiled net
    assert state["net.c1.0.weight"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, None),
        (None, None),
        (True, {"dynamic": False}),
        ("max-autotune", {"dynamic": False, "mode": "max-autotune"}),
        ({"backend": "eager"}, {"dynamic": False, "backend": "eager"}),
        ({"dynamic": True}, {"dynamic": True}),
    ],
)
def test_compile_settings(value, expected):
    assert compile_options(value) == expected


def test_bad_compile_setting_is_a_config_error():
    with pytest.raises(ConfigError, match=r"speed\.compile='fast' is not a compile setting"):
        compile_options("fast")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("speed.compile=fast", "speed.compile='fast' is not a compile setting"),
        ("speed.channels_last=2", "speed.channels_last=2 must be true or false"),
    ],
)
def test_bad_switches_stop_the_run_before_any_work(make_cfg, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(override))
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
