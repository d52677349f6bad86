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
