"""tune.lr_find=true: Lightning's LR range test before fit, its suggestion used and recorded."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifar_lightning.errors import ConfigError, UserError
from cifar_lightning.run.loggers import events_dir
from cifar_lightning.run.train import train
from cifar_lightning.training.architectures import DepthwiseClassifier

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Depthwise net, one-cycle over one epoch of 8 steps (256 fake images, batch 32) peaking on
# step 1 (pct_start 0.25), and a 20-step range test.
RUN = ["sched=onecycle", "sched.scheduler.pct_start=0.25", "seed=3"]
LR_FIND = ["tune.lr_find=true", "tune.num_training=20"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    from cifar_lightning.run.config import compose_config
    from conftest import FAST

    out = tmp_path_factory.mktemp("tuned")
    cfg = compose_config([*FAST, f"paths.output_dir={out}", *RUN, *LR_FIND])
    return out, cfg, train(cfg)


@pytest.mark.slow
def test_suggestion_is_recorded_with_its_plot(tuned):
    out, _, results = tuned
    found = json.loads((out / "metrics.json").read_text())["lr_find"]
    assert found == results["lr_find"]
    assert 1e-8 < found["suggestion"] < 1.0 and found["steps"] == 20
    plot = out / "lr_find.png"
    assert found["plot"] == str(plot) and plot.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_suggestion_becomes_the_lr_and_the_one_cycle_peak(tuned):
    out, cfg, results = tuned
    lr = results["lr_find"]["suggestion"]
    assert cfg.optim.lr == lr and cfg.sched.scheduler.max_lr == lr
    model = DepthwiseClassifier.load_from_checkpoint(out / "checkpoints" / "last.ckpt")
    assert model.hparams.optimizer["lr"] == lr
    assert model.hparams.scheduler["scheduler"]["max_lr"] == lr
    # The logged LR really peaks there.
    lrs = [e.value for e in EventAccumulator(str(events_dir(out))).Reload().Scalars("train/lr")]
    assert max(lrs) == pytest.approx(lr, rel=1e-4)


@pytest.mark.slow
def test_plot_and_aug_preview_are_in_tensorboard(tuned):
    out, _, _ = tuned
    images = EventAccumulator(str(events_dir(out))).Reload().Tags()["images"]
    assert "tune/lr_find" in images and "aug/preview" in images
    assert (out / "aug_preview.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_run_equals_a_run_given_the_suggestion_directly(tuned, make_cfg):
    """The range test trains a throwaway copy inside a saved RNG state: afterwards the run
    starts from the same weights and random streams as one without it."""
    _, _, results = tuned
    lr = results["lr_find"]["suggestion"]
    plain = train(make_cfg(*RUN, f"optim.lr={lr!r}"))
    assert plain["lr_find"] is None
    assert plain["metrics"] == pytest.approx(results["metrics"], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tune.num_training=5", "tune.num_training=5 is too few steps"),
        ("tune.min_lr=1", "must satisfy 0 < min_lr < max_lr"),
        ("tune.mode=log", "tune.mode='log' must be exponential or linear"),
        # Each DDP process would find (and train with) its own LR.
        ("trainer.devices=2", "runs the range test in one process on one device"),
    ],
)
def test_bad_range_test_settings_fail_before_any_work(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg("tune.lr_find=true", override))


@pytest.mark.slow
def test_a_range_test_that_only_diverges_says_so(make_cfg):
    """Every loss NaN from the first step: no suggestion, one clear error."""
    cfg = make_cfg(*LR_FIND, "tune.min_lr=1e6", "tune.max_lr=1e9", "tune.num_training=13")
    with pytest.raises(UserError, match="the LR range test gave no suggestion"):
        train(cfg)


@pytest.mark.slow
def test_fast_dev_run_skips_the_range_test(make_cfg):
    results = train(make_cfg(*LR_FIND, "trainer.fast_dev_run=true", "optim.lr=0.02"))
    assert results["lr_find"] is None and results["status"] == "completed"


@pytest.mark.slow
def test_seed004_finds_its_lr(make_cfg, tmp_path):
    """The recipe that needs it: ResNet-9, Adam, one-cycle — cut down to a few tiny steps."""
    results = train(
        make_cfg(
            "experiment=seed004",
            "data.batch_size=2",
            "tune.num_training=13",
            "tune.max_lr=0.1",
            "tune.early_stop_threshold=null",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
        )
    )
    assert results["lr_find"]["steps"] == 13
    assert torch.isfinite(torch.tensor(results["lr_find"]["suggestion"]))
