"""The config tree composes, mirrors the code, and passes trainer.* straight to Lightning."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import get_class

from cifar_lightning.run.config import CONFIG_DIR, claim_dir, compose_config
from cifar_lightning.run.train import build_trainer
from cifar_lightning.run.trainer import resolve_precision
from conftest import REPO

CONF = Path(CONFIG_DIR)
# Groups whose options are picked on the command line (group=option).
PICKABLE = ["data", "aug", "model", "optim", "sched", "trainer", "callbacks", "logger"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem != "base")


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in PICKABLE for o in options(g)])
def test_every_group_option_composes(make_cfg, group, option):
    extra = ["data.root=somewhere"] if (group, option) == ("data", "imagefolder") else []
    cfg = make_cfg(f"{group}={option}", *extra)
    assert cfg.seed == 42
    assert cfg.data.source in ("cifar10", "cifar100", "imagefolder", "fake")


def test_defaults_are_the_documented_recipe(make_cfg):
    cfg = make_cfg(fast=False)
    assert cfg.model._target_.endswith("DepthwiseClassifier")
    assert cfg.data.source == "cifar10" and cfg.data.val_size == 5000
    assert cfg.optim._target_ == "torch.optim.SGD" and cfg.optim._partial_
    assert cfg.sched.interval == "step"
    assert cfg.sched.scheduler.max_lr == cfg.optim.lr  # interpolated, follows optim.lr


def test_model_configs_point_at_a_net_module_of_the_same_name():
    """conf/model/X.yaml <-> cifar_lightning/models/X.py: one hop for a newcomer."""
    for option in set(options("model")) - {"custom"}:  # custom: a net of the user's (test_own_net)
        model = compose_config([f"model={option}"]).model
        net = get_class(model.net._target_)
        assert Path(inspect.getfile(net)).relative_to(REPO / "cifar_lightning").as_posix() == (
            f"models/{option}.py"
        )
        assert get_class(model._target_).__module__ == "cifar_lightning.training.architectures"


def test_trainer_config_lists_every_trainer_argument():
    """So that any `trainer.KEY=VALUE` works without Hydra's `+` prefix."""
    managed = {
        "self",
        "callbacks",
        "logger",
        "default_root_dir",
        # newer than the lightning 2.6.0 on the GPU image; use +trainer.KEY there
        "enable_autolog_hparams",
        "model_registry",
    }
    signature = set(inspect.signature(L.Trainer.__init__).parameters) - managed
    listed = set(compose_config([]).trainer)
    assert listed == signature, f"missing: {signature - listed}; unknown: {listed - signature}"


def test_trainer_keys_pass_through(make_cfg, tmp_path):
    cfg = make_cfg(
        "trainer.limit_train_batches=20", "trainer.max_epochs=3", "trainer.gradient_clip_val=1.5"
    )
    trainer = build_trainer(cfg)
    assert trainer.limit_train_batches == 20
    assert trainer.max_epochs == 3
    assert trainer.gradient_clip_val == 1.5


def test_precision_auto_is_fp32_on_cpu_and_explicit_values_win():
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"


@pytest.mark.parametrize(
    "capabilities, expected",
    [([(9, 0)], "bf16-mixed"), ([(8, 0), (8, 6)], "bf16-mixed"), ([(7, 0)], "16-mixed"),
     ([(8, 0), (7, 5)], "16-mixed")],
)  # fmt: skip
def test_precision_auto_on_a_gpu_asks_nvml_not_torch(monkeypatch, capabilities, expected):
    """torch's is_bf16_supported counts emulation (a V100 says yes) and initialises CUDA,
    which Lightning's ddp_fork then refuses."""
    from cifar_lightning.run import trainer as trainer_module

    def refuse(*args, **kwargs):
        raise AssertionError("would initialise CUDA in the launching process")

    monkeypatch.setattr(trainer_module, "nvml_compute_capabilities", lambda: capabilities)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", refuse)
    monkeypatch.setattr(torch.cuda, "get_device_capability", refuse)
    assert resolve_precision("auto", "gpu") == expected
    assert not torch.cuda.is_initialized()


def test_nvml_answers_none_where_there_is_no_nvidia_driver():
    from cifar_lightning.run.trainer import nvml_compute_capabilities

    found = nvml_compute_capabilities()
    assert found is None or all(major >= 3 for major, _ in found)


def test_run_dirs_never_collide(tmp_path):
    base = str(tmp_path / "2026-01-01" / "12-00-00")
    first, second, third = claim_dir(base), claim_dir(base), claim_dir(base)
    assert first == base and second == base + "-1" and third == base + "-2"
    assert all(Path(p).is_dir() for p in (first, second, third))


@pytest.mark.parametrize(
    "command", ["train", "evaluate", "bench", "summary", "reproduce", "report", "airbench_compare"]
)
def test_version_is_ours_with_what_the_numbers_depend_on(command, tmp_path):
    from cifar_lightning import __version__
    from conftest import run_cli_in_process

    proc = run_cli_in_process("--version", cwd=tmp_path, command=command)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"cifar-lightning {__version__}, torch ")
    assert "lightning " in proc.stdout and "CUDA " in proc.stdout and "Hydra" not in proc.stdout
