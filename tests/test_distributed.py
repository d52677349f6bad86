"""Several processes, one run: DDP on CPU (gloo) through Lightning's launcher and torchrun."""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from torch.distributed import TCPStore

from cifar_lightning.errors import ConfigError
from cifar_lightning.run import distributed
from cifar_lightning.run.config import build, claim_dir, compose_config
from cifar_lightning.run.loggers import events_dir
from cifar_lightning.run.train import build_trainer
from conftest import REPO, run_cli
from probes import image_digest

DDP_CLI = [
    "debug=fast",  # 256 training images: 128 per rank, 4 steps of 32
    "trainer=ddp",
    "trainer.devices=2",
    "aug=none",
]


def shard_probe(out: Path) -> list[str]:
    """Overrides that load tests/probes.py's ShardProbe into the run."""
    probe = "+callbacks.shard_probe"
    return [
        f"{probe}._target_=probes.ShardProbe",
        f"{probe}.out_dir={out}",
        f"{probe}.mean=${{data.mean}}",
        f"{probe}.std=${{data.std}}",
    ]


def training_digests(overrides: list[str]) -> list[str]:
    """The digests of the training split the run's DataModule holds."""
    cfg = compose_config(overrides)
    datamodule = build(cfg.data, "data", aug=None)
    datamodule.setup("fit")
    train = datamodule.train_set
    return [image_digest(torch.from_numpy(train.images[j]).permute(2, 0, 1)) for j in train.indices]


def probe_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}


def assert_one_run(root: Path) -> Path:
    """Exactly one run dir, one metrics.json, and TensorBoard events from one process."""
    (metrics,) = root.glob("**/metrics.json")
    run_dir = metrics.parent
    dated = [p for p in root.glob("*/*") if p.is_dir()]
    assert dated == [run_dir], f"more than one run dir: {dated}"
    results = json.loads(metrics.read_text())
    assert results["status"] == "completed" and results["run_dir"] == str(run_dir)
    events = list(events_dir(run_dir).glob("events.out.tfevents.*"))
    assert events, "no TensorBoard events"
    writers = {e.name.split(".")[4] for e in events}  # events.out.tfevents.<time>.<host>.<pid>.N
    assert len(writers) == 1, f"event files from several processes: {sorted(writers)}"
    assert len(list(run_dir.glob("checkpoints/last.ckpt"))) == 1
    return run_dir


def assert_disjoint_shards_covering(probe_dir: Path, expected: list[str]) -> None:
    ranks = [json.loads(p.read_text()) for p in sorted(probe_dir.glob("rank*.json"))]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    shards = [set(r["digests"]) for r in ranks]
    assert all(len(r["digests"]) == len(expected) // 2 for r in ranks)  # each rank: half
    assert not shards[0] & shards[1], "the two ranks trained on the same images"
    assert shards[0] | shards[1] == set(expected), "the shards do not cover the training set"


@pytest.mark.slow
def test_ddp_two_cpu_processes_one_run_dir_disjoint_shards(tmp_path):
    out, probes = tmp_path / "outputs", tmp_path / "probes"
    proc = run_cli(
        "cifar_lightning.train",
        *DDP_CLI,
        *shard_probe(probes),
        f"paths.output_root={out}",
        cwd=tmp_path,
        env=probe_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    run_dir = assert_one_run(out)
    results = json.loads((run_dir / "metrics.json").read_text())
    assert results["global_step"] == 4  # 128 images per rank / 32: each rank did half
    assert_disjoint_shards_covering(probes, training_digests(DDP_CLI))


@pytest.mark.slow
def test_ddp_trains_the_speedrun_net_past_its_whitening_bias_freeze(tmp_path):
    """The bias freeze once flipped requires_grad under DDP: the next step raised."""
    out = tmp_path / "outputs"
    proc = run_cli(
        "cifar_lightning.train",
        *DDP_CLI,
        "model=airbench_net",
        "model.net.widths=[8,16,16]",
        "model.whiten_images=64",
        "model.whiten_bias_epochs=1",
        "trainer.max_epochs=2",
        f"paths.output_root={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(assert_one_run(out).joinpath("metrics.json").read_text())
    assert results["global_step"] == 8  # 2 epochs of 128 images per rank / 32


@pytest.mark.slow
def test_torchrun_processes_share_one_run_dir(tmp_path):
    out, probes = tmp_path / "outputs", tmp_path / "probes"
    args = ["--standalone", "--nproc_per_node=2", "-m", "cifar_lightning.train"]
    proc = run_cli(
        "torch.distributed.run",  # = torchrun
        *args,
        *DDP_CLI,
        *shard_probe(probes),
        f"paths.output_root={out}",
        cwd=tmp_path,
        env=probe_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_one_run(out)
    assert_disjoint_shards_covering(probes, training_digests(DDP_CLI))


# --- the pieces, in process -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ranks_get_rank_zeros_claim(tmp_path, monkeypatch):
    """Rank 0 claims (adding -1 if taken); rank 1 asked with another timestamp gets its name."""
    port = free_port()
    store = TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=10))
    (tmp_path / "12-00-00").mkdir()
    env = {"WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(distributed, "_claim_numbers", iter(range(100)))
    monkeypatch.setenv("RANK", "0")
    assert claim_dir(str(tmp_path / "12-00-00")) == str(tmp_path / "12-00-00-1")
    monkeypatch.setattr(distributed, "_claim_numbers", iter(range(100)))
    monkeypatch.setenv("RANK", "1")
    assert claim_dir(str(tmp_path / "12-00-01")) == str(tmp_path / "12-00-00-1")
    assert not (tmp_path / "12-00-01").exists()
    del store


@pytest.mark.parametrize(
    "env",
    [
        {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_JOB_NAME": "train"},
        {"NODE_RANK": "1"},
    ],
)
def test_processes_with_nothing_to_share_a_claim_through_ask_for_one_dir(
    tmp_path, monkeypatch, env
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=r"hydra\.run\.dir="):
        claim_dir(str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_interactive_slurm_shell_and_submitit_tasks_claim_normally(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # srun --pty bash
    assert claim_dir(str(tmp_path / "a")) == str(tmp_path / "a")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert claim_dir(str(tmp_path / "b")) == str(tmp_path / "b")


def test_ddp_trainer_uses_gloo_and_the_subprocess_launcher_on_cpu(make_cfg, tmp_path):
    cfg = make_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    trainer = build_trainer(cfg)
    assert trainer.world_size == 2 and trainer.num_nodes == 1
    assert trainer.strategy._get_process_group_backend() == "gloo"
    distributed.check_launch(trainer, in_sweep=False)  # a single run: fine
    with pytest.raises(ConfigError, match="ddp_spawn"):
        distributed.check_launch(trainer, in_sweep=True)


def test_ddp_spawn_is_allowed_in_a_sweep(make_cfg, tmp_path):
    cfg = make_cfg("trainer=ddp", "trainer.strategy=ddp_spawn", "trainer.accelerator=cpu")
    cfg.trainer.devices = 2
    distributed.check_launch(build_trainer(cfg), in_sweep=True)


@pytest.mark.parametrize(
    ("accelerator", "devices", "processes", "gpus"),
    [
        ("gpu", 4, 4, 4),
        ("auto", "auto", 1, 1),
        ("auto", -1, 1, 1),
        ("cuda", [0, 1], 2, 2),
        ("gpu", "0,1,2", 3, 3),
        ("cpu", 2, 2, 0),
    ],
)
def test_cluster_resources_follow_the_trainer(accelerator, devices, processes, gpus):
    assert distributed.processes_per_node(devices) == processes
    assert distributed.gpus_per_node(accelerator, devices) == gpus


def test_submitit_slurm_asks_for_what_the_trainer_uses():
    from hydra import compose, initialize_config_dir

    from cifar_lightning.run.config import CONFIG_DIR

    overrides = ["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", [*overrides, "trainer.num_nodes=2"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
