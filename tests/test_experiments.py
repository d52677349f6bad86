"""experiment=seed000 … seed004: each the seed's full recipe, and each trains."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cifar_lightning.run.config import CONFIG_DIR, compose_config
from cifar_lightning.run.train import train

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("seed*.yaml"))
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
HALF = [0.5, 0.5, 0.5]
# Every seed trained on all 50k images, validated on the test set, and is tested on its
# final weights here so that the reported test number is not picked on the test set.
COMMON = {"data.val_size": 0, "test.ckpt": "last"}

# The spec (shared/specs/seed-models.md), value by value.
RECIPES = {
    "seed000": {
        "model._target_": "cifar_lightning.training.architectures.SimpleCNNClassifier",
        "aug": "seed000",
        "optim._target_": "torch.optim.Adam",
        "optim.lr": 1e-3,
        "optim.weight_decay": 0.0,
        "sched.interval": "epoch",
        "sched.scheduler._target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
        "sched.scheduler.T_max": 100,
        "trainer.max_epochs": 100,
        "data.batch_size": 128,
        "data.mean": HALF,
        "data.std": HALF,
        "seed": 2021,
    },
    "seed001": {
        "model._target_": "cifar_lightning.training.architectures.MediumCNNClassifier",
        "aug": "seed001",
        "optim._target_": "torch.optim.Adam",
        "optim.lr": 3e-4,
        "optim.betas": [0.9, 0.995],
        "optim.weight_decay": 5e-4,
        "sched.scheduler": None,
        "trainer.max_epochs": 300,
        "data.batch_size": 64,
        "data.mean": CIFAR_MEAN,
        "data.std": CIFAR_STD,
    },
    "seed002": {
        "model._target_": "cifar_lightning.training.architectures.VGGClassifier",
        "aug": "none",
        "optim._target_": "torch.optim.SGD",
        "optim.lr": 1e-3,
        "optim.momentum": 0.9,
        "optim.weight_decay": 0.0,
        "sched.scheduler": None,
        "trainer.max_epochs": 15,
        "data.batch_size": 8,
        "data.mean": HALF,
        "data.std": HALF,
    },
    "seed003": {
        "model._target_": "cifar_lightning.training.architectures.DepthwiseClassifier",
        "model.net.dropout": 0.05,
        "aug": "seed003",
        "optim._target_": "torch.optim.SGD",
        "optim.lr": 0.05,
        "optim.momentum": 0.9,
        "optim.weight_decay": 5e-4,
        "sched.interval": "step",
        "sched.scheduler._target_": "torch.optim.lr_scheduler.OneCycleLR",
        "sched.scheduler.max_lr": 0.05,
        "sched.scheduler.pct_start": 0.2,
        "sched.scheduler.div_factor": 10.0,
        "sched.scheduler.final_div_factor": 100.0,
        "sched.scheduler.anneal_strategy": "cos",
        "sched.scheduler.cycle_momentum": True,
        "trainer.max_epochs": 20,
        "data.batch_size": 128,
        "data.mean": CIFAR_MEAN,
        "data.std": CIFAR_STD,
        "seed": 42,
    },
    "seed004": {
        "model._target_": "cifar_lightning.training.architectures.ResNet9Classifier",
        "aug": "seed004",
        "optim._target_": "torch.optim.Adam",
        "optim.weight_decay": 1e-5,
        "tune.lr_find": True,
        "sched.interval": "step",
        "sched.scheduler._target_": "torch.optim.lr_scheduler.OneCycleLR",
        "sched.scheduler.pct_start": pytest.approx(5 / 24),
        "sched.scheduler.div_factor": 100.0,
        "sched.scheduler.final_div_factor": 100.0,
        "sched.scheduler.anneal_strategy": "linear",
        "sched.scheduler.three_phase": False,
        "trainer.max_epochs": 24,
        "data.batch_size": 512,
        "data.mean": CIFAR_MEAN,
        "data.std": CIFAR_STD,
        "seed": 42,
    },
}


def test_every_seed_has_a_recipe():
    assert sorted(RECIPES) == EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_recipe_matches_the_spec(name):
    cfg = compose_config([f"experiment={name}"])
    for key, expected in {**COMMON, **RECIPES[name]}.items():
        if key == "aug":
            assert cfg.aug == compose_config([f"aug={expected}"]).aug, name
            continue
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        assert value == expected, f"{name}: {key}={value}, spec says {expected}"


def test_the_lr_search_drives_seed004s_peak():
    cfg = compose_config(["experiment=seed004", "optim.lr=0.123"])
    assert cfg.sched.scheduler.max_lr == 0.123


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_recipe_trains_two_steps_on_fake_data(make_cfg, name):
    cfg = make_cfg(
        f"experiment={name}",
        "data.batch_size=8",  # the recipe's own batch (up to 512) is slow on a CPU
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "tune.lr_find=false",  # tested on its own in test_tune.py
    )
    results = train(cfg)
    assert results["status"] == "completed" and results["global_step"] == 2
    assert results["tested"] == "last"
    assert (
        results["params"]
        == {
            "seed000": 399_274,
            "seed001": 2_791_434,
            "seed002": 34_749_002,
            "seed003": 82_474,
            "seed004": 6_573_120,
        }[name]
    )
    assert "test/acc" in results["metrics"]


# What each seed's own training loop does per epoch (its DataLoader keeps the last partial
# batch, PyTorch's default), and the epochs its per-step schedule is laid out over.
SEED_STEPS = {
    "seed000": (391, 100),
    "seed001": (782, 300),
    "seed002": (6_250, 15),
    "seed003": (391, 20),
    "seed004": (98, 24),
}


@pytest.fixture
def fifty_thousand(monkeypatch):
    """A fake source of CIFAR-10's size (zeros, allocated lazily): loaders count, not train."""
    import numpy as np

    from cifar_lightning.data import datamodule, sources

    def fake(train_size, test_size, classes, seed=0):
        arrays = [
            sources.ImageArrays(np.zeros((n, 32, 32, 3), np.uint8), np.arange(n) % 10)
            for n in (50_000, 10_000)
        ]
        return sources.Splits(*arrays, classes=tuple(classes))

    monkeypatch.setattr(datamodule, "make_fake", fake)


@pytest.mark.parametrize("loader", ["classic", "device"])
@pytest.mark.parametrize("name", sorted(SEED_STEPS))
def test_recipes_step_like_their_seeds(fifty_thousand, name, loader):
    from cifar_lightning.run.config import build

    cfg = compose_config([f"experiment={name}", "data=fake", f"data.loader={loader}"])
    cfg.data.num_workers = 0
    datamodule = build(cfg.data, "data", aug=None, batched_aug=None)
    datamodule.setup("fit")
    steps, epochs = SEED_STEPS[name]
    assert len(datamodule.train_set) == 50_000  # all of it: the seeds held nothing out
    assert len(datamodule.train_dataloader()) == steps
    assert cfg.trainer.max_epochs == epochs
    assert cfg.sched.get("interval") != "step" or name in ("seed003", "seed004")


def test_the_speedrun_drops_its_last_partial_batch_as_airbench_does(fifty_thousand):
    from cifar_lightning.run.config import build

    cfg = compose_config(["experiment=speedrun", "data=fake"])
    datamodule = build(cfg.data, "data", aug=None, batched_aug=None)
    datamodule.setup("fit")
    assert len(datamodule.train_dataloader()) == 48  # 50,000 // 1,024: the last 848 sit out


def test_metrics_json_says_how_the_run_stepped(make_cfg, tmp_path):
    """236 training images at batch 32: 7 full batches and one of 12, kept or dropped."""
    common = ["data.fake_train_size=300", "trainer.limit_val_batches=1", "test.enabled=false"]
    kept = train(make_cfg(*common, "data.drop_last=false"))
    assert (kept["steps_per_epoch"], kept["last_batch_kept"]) == (8, True)
    other = f"paths.output_dir={tmp_path / 'dropped'}"
    dropped = train(make_cfg(*common, "data.drop_last=true", other))
    assert (dropped["steps_per_epoch"], dropped["last_batch_kept"]) == (7, False)


def test_resnet9_plus_is_seed004_with_ema_smoothing_and_cutmix(make_cfg):
    plus, seed = compose_config(["experiment=resnet9_plus"]), compose_config(["experiment=seed004"])
    changed = {"ema", "loss", "mix", "model"}  # model: its loss and mix follow those nodes
    for key in set(seed) - changed:
        assert plus[key] == seed[key], key
    assert plus.model.net == seed.model.net and plus.model._target_ == seed.model._target_
    assert plus.ema.enabled and plus.loss.label_smoothing == 0.1
    assert plus.mix.mode == "cutmix" and plus.mix.prob == 0.5
    assert plus.aug.batched is not None  # data.loader=auto keeps the device loader on a GPU
    cfg = make_cfg("experiment=resnet9_plus", "data.batch_size=8", "tune.lr_find=false",
                   "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                   "trainer.limit_test_batches=1", "data.loader=device")  # fmt: skip
    results = train(cfg)
    assert results["status"] == "completed" and results["ema"]["updates"] == 2
