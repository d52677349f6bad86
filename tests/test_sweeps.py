"""Sweeps: Optuna search, the joblib and submitit launchers, failed jobs, seed studies."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir

from cifar_lightning.errors import ConfigError
from cifar_lightning.run import sweeps
from cifar_lightning.run.config import CONFIG_DIR
from cifar_lightning.run.train import train
from conftest import run_cli, write_image_folder

TINY_CLI = [
    "debug=fast",
    "data.fake_train_size=96",
    "data.val_size=32",
    "data.fake_test_size=32",
]
# A real training-time failure: StepLR divides by step_size when it first steps (end of
# epoch 1), so the job has trained a little and then raises ZeroDivisionError.
FAILS_IN_TRAINING = ["sched=step", "sched.scheduler.step_size=0"]


def records(sweep_dir: Path) -> dict[str, dict]:
    """metrics.json of every job, by job directory name."""
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def sweep_in_a_taken_dir(root: Path, *overrides: str):
    """Run ``-m *overrides`` after making the name the sweep would claim taken.

    The sweep then claims ``sweep-1``, and every job has to find ``sweep-1`` too, wherever it
    runs: the claim must travel with the job (to joblib's workers, to submitit's processes),
    not be made again. Returns the finished process and ``sweep-1``.
    """
    (root / "sweep").mkdir(parents=True)
    claimed = "hydra.sweep.dir='${claim_dir:" + str(root / "sweep") + "}'"
    proc = run_cli("cifar_lightning.train", "-m", *overrides, claimed, *TINY_CLI, cwd=root)
    return proc, root / "sweep-1"


def compose_search(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", ["hparams_search=optuna", *overrides], return_hydra_config=True)


# --- Optuna -------------------------------------------------------------------------------


def test_search_space_covers_lr_weight_decay_label_smoothing_around_the_optimizer():
    sweeper = compose_search().hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.max_failure_rate == 1.0
    params = sweeper.params
    assert set(params) >= {"optim.lr", "optim.weight_decay", "loss.label_smoothing"}
    assert params["optim.lr"] == "tag(log, interval(0.005000000000000001, 0.5))"  # SGD 0.05
    adam = compose_search("optim=adam").hydra.sweeper.params
    assert adam["optim.lr"] == "tag(log, interval(0.0001, 0.01))"  # Adam 1e-3
    raw = compose_search().hydra.sweeper
    storage = raw._get_node("storage")._value()  # unresolved: resolving would claim a dir
    assert storage == "sqlite:///${hydra.sweep.dir}/optuna.db"


def test_parallel_trials_follow_the_joblib_launcher():
    assert compose_search().hydra.sweeper.n_jobs == 1  # one trial at a time
    joblib = compose_search("hydra/launcher=joblib", "hydra.launcher.n_jobs=3").hydra
    assert joblib.sweeper.n_jobs == 3
    every_cpu = compose_search("hydra/launcher=joblib", "hydra.launcher.n_jobs=-1").hydra
    assert every_cpu.sweeper.n_jobs == os.cpu_count()  # joblib's -1, as a count


def test_search_returns_the_optimized_metric_and_names_a_missing_one(monkeypatch, make_cfg):
    cfg = make_cfg("optimized_metric=val/acc_best")
    results = {"metrics": {"val/acc_best": 0.5, "test/acc": 0.4}}
    assert sweeps.optimized_value(cfg, results) == 0.5
    cfg.optimized_metric = "val/accuracy"
    assert sweeps.optimized_value(cfg, results) is None  # not a search: nothing to say
    monkeypatch.setattr(sweeps, "_plugin", lambda kind: "x.OptunaSweeper")
    with pytest.raises(ConfigError, match=r"not logged(.|\n)*use one of: test/acc, val/acc_best"):
        sweeps.optimized_value(cfg, results)


@pytest.mark.slow
def test_optuna_search_records_failed_trials_goes_on_and_resumes(tmp_path):
    # step_size is searched too: choice(0) trials fail in training, choice(1) ones train.
    search = [
        "hparams_search=optuna",
        "sched=step",
        "sched.scheduler.step_size=choice(0,1)",
        "hydra.sweeper.sampler.seed=2",
        f"paths.output_root={tmp_path}",
        *TINY_CLI,
    ]
    proc = run_cli("cifar_lightning.train", *search, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = tmp_path.glob("multirun/*/*")
    jobs = records(sweep_dir)
    assert sorted(jobs) == ["0", "1"]
    for job in jobs.values():
        failed = "sched.scheduler.step_size=0" in job["overrides"]
        assert job["status"] == ("failed" if failed else "completed")
        assert ("ZeroDivisionError" in job.get("error", "")) == failed
    assert {j["status"] for j in jobs.values()} == {"failed", "completed"}  # seed 2: fail, then ok

    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "optim.lr",
        "optim.weight_decay",
        "loss.label_smoothing",
        "sched.scheduler.step_size",
    }
    assert best["best_params"]["sched.scheduler.step_size"] == 1
    assert "Best parameters:" in proc.stdout + proc.stderr
    completed = [j for j in jobs.values() if j["status"] == "completed"]
    assert best["best_value"] == max(j["metrics"]["val/acc_best"] for j in completed)

    # Resume: a new sweep pointed at the study's database adds to the same study.
    database = sweep_dir / "optuna.db"
    storage = f"hydra.sweeper.storage=sqlite:///{database}"
    proc = run_cli(
        "cifar_lightning.train", *search, "hydra.sweeper.n_trials=1", storage, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="depthwise", storage=f"sqlite:///{database}")
    assert len(study.trials) == 3
    # The continued study's sampler does not propose its first trial again (seed + position).
    assert study.trials[2].params != study.trials[0].params
    earlier = {str(t.number): t.state.name for t in study.trials[:2]}
    assert earlier == {
        n: "FAIL" if j["status"] == "failed" else "COMPLETE" for n, j in jobs.items()
    }


# --- launchers ------------------------------------------------------------------------------


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_workers_and_a_failure_spares_the_others(tmp_path):
    proc, sweep_dir = sweep_in_a_taken_dir(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "sched=step",
        "sched.scheduler.step_size=0,1",
    )
    # Hydra ends a sweep with a failed job with that job's error, after the whole batch ran.
    assert proc.returncode == 1
    assert "ZeroDivisionError" in proc.stderr
    jobs = records(sweep_dir)
    assert sorted(jobs) == ["0", "1"], sorted(p.name for p in tmp_path.iterdir())
    failed, completed = jobs["0"], jobs["1"]
    assert failed["status"] == "failed"
    assert failed["error"] == "ZeroDivisionError: integer modulo by zero"
    assert failed["global_step"] == 2 and failed["epochs"] == 0  # it trained, then failed
    assert failed["run_dir"] == str(sweep_dir / "0")
    assert set(failed) == set(completed) | {"error"}  # the completed run's schema
    assert completed["status"] == "completed" and completed["global_step"] == 2
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_submitit_local_runs_a_seed_study_in_separate_processes(tmp_path):
    proc, sweep_dir = sweep_in_a_taken_dir(tmp_path, "hydra/launcher=submitit_local", "seed=0,1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = records(sweep_dir)
    assert sorted(jobs) == ["0", "1"], sorted(p.name for p in tmp_path.rglob("metrics.json"))
    assert [jobs[n]["seed"] for n in ("0", "1")] == [0, 1]
    assert all(j["status"] == "completed" for j in jobs.values())
    # Each job ran in its own submitit process, its logs beside the jobs.
    assert len(list(sweep_dir.glob(".submitit/*/*_0_log.out"))) == 2
    assert (sweep_dir / "0" / ".hydra" / "config.yaml").exists()


@pytest.mark.slow
def test_a_user_error_fails_only_its_job(tmp_path):
    """A job that fails with a UserError while it runs (here an image in its data is corrupt:
    a bad value, or a data.root that does not exist, stops the sweep before any job) fails that
    job only, with the one message a single run prints: no traceback, no line of Hydra's
    repeating it, and no log line twice."""
    good = write_image_folder(tmp_path / "good", per_class=10)
    corrupt = write_image_folder(tmp_path / "corrupt", per_class=10)
    (corrupt / "train" / "cat" / "0003.png").write_bytes(b"not a png")
    proc = run_cli(
        "cifar_lightning.train",
        "-m",
        "data=imagefolder",
        f"data.root='{corrupt}','{good}'",
        *TINY_CLI,
        f"paths.output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1  # the sweep still says that a job failed
    out = proc.stderr + proc.stdout
    assert proc.stderr.count("train/cat/0003.png is not a readable image") == 1, out[-3000:]
    assert "Traceback" not in out and "Error executing job" not in out
    assert out.count("Seed set to") == 2  # once a job: Lightning's own handler is dropped
    (sweep_dir,) = tmp_path.glob("multirun/*/*")
    jobs = records(sweep_dir)
    assert jobs["0"]["status"] == "failed" and jobs["0"]["error"].startswith("DataError: ")
    assert jobs["1"]["status"] == "completed"


def test_a_data_root_that_does_not_exist_stops_the_sweep_before_any_job(tmp_path):
    good = write_image_folder(tmp_path / "good", per_class=2)
    proc = run_cli(
        "cifar_lightning.train",
        "-m",
        "data=imagefolder",
        f"data.root='{good}','{tmp_path / 'missing'}'",
        f"paths.output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert f"sweep job #1 (data=imagefolder data.root='{tmp_path / 'missing'}'" in proc.stderr
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "multirun").exists()  # nothing ran, nothing was written


# --- failures, in process --------------------------------------------------------------------


def test_a_run_failing_in_training_records_how_far_it_got(make_cfg, tmp_path):
    cfg = make_cfg(*FAILS_IN_TRAINING, "trainer.max_epochs=2", "trainer.limit_train_batches=3")
    with pytest.raises(ZeroDivisionError):
        train(cfg)
    failed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert failed["status"] == "failed" and failed["error"].startswith("ZeroDivisionError")
    assert failed["global_step"] == 3 and failed["params"] == 82_474
    assert failed["device"].startswith("cpu") and "train/loss" in failed["metrics"]


def test_gpu_slots_give_parallel_jobs_different_gpus_and_free_them(tmp_path):
    held, release = [], threading.Event()

    def job():
        with sweeps.gpu_slot(2, tmp_path) as gpu:
            held.append(gpu)
            release.wait(10)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
        while len(held) < threads.index(t) + 1:
            release.wait(0.01)
    assert held == [0, 1, 0]  # two jobs per GPU only once every GPU has one
    release.set()
    for t in threads:
        t.join()
    with sweeps.gpu_slot(2, tmp_path) as gpu:
        assert gpu == 0  # every slot was freed


def test_joblib_job_on_a_multi_gpu_machine_is_pinned_to_one(monkeypatch, make_cfg, tmp_path):
    monkeypatch.setattr(sweeps.torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(sweeps, "GPU_LOCK_DIR", tmp_path)
    monkeypatch.setattr(sweeps, "_plugin", lambda kind: "x.JoblibLauncher")
    cfg = make_cfg("trainer.accelerator=auto", "trainer.devices=auto")
    first = make_cfg("trainer.accelerator=gpu", "trainer.devices=1")
    with sweeps.pinned_to_a_free_gpu(first), sweeps.pinned_to_a_free_gpu(cfg):
        assert (first.trainer.devices, cfg.trainer.devices) == ([0], [1])
    several = make_cfg("trainer.accelerator=gpu", "trainer.devices=2")
    with sweeps.pinned_to_a_free_gpu(several):
        assert several.trainer.devices == 2  # a multi-device job is left alone (and refused)
    monkeypatch.setattr(sweeps, "_plugin", lambda kind: "x.BasicLauncher")
    with sweeps.pinned_to_a_free_gpu(cfg := make_cfg("trainer.devices=auto")):
        assert cfg.trainer.devices == "auto"
