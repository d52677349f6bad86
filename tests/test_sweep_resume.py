"""A killed sweep, continued in its own directory, ends with the results of one never killed.

One grid sweep is killed twice (``kill -9`` of its process group, then SIGTERM) and continued
twice; one Optuna search is stopped by SIGTERM, and a trial a ``kill -9`` would leave RUNNING
is added, before it continues to ``n_trials`` and the trials of one never stopped. The
SIGTERMs go to this very process (the sweep runs in it, as ``run_cli_in_process`` runs
commands): only ``kill -9`` needs a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from conftest import run_cli_in_process

STEPS_PER_EPOCH = 4
JOB = [  # 4 steps an epoch, 2 epochs, a checkpoint every step: kills land mid-epoch
    "debug=fast",
    "data.fake_train_size=96",
    "data.val_size=32",
    "data.fake_test_size=32",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "callbacks.periodic_checkpoint.train_time_interval=null",
    "callbacks.periodic_checkpoint.every_n_train_steps=1",
    "~callbacks.aug_preview",
    "~callbacks.training_curves",
    "~callbacks.evaluation_figures",
]
GRID = ["seed=0,1", "optim.lr=0.05,0.1"]


def results(sweep_dir: Path) -> dict[tuple[str, ...], tuple]:
    """Each job's overrides -> how it ended (status, metrics, epochs, steps)."""
    found = {}
    for path in sweep_dir.glob("*/metrics.json"):
        r = json.loads(path.read_text())
        found[tuple(r["overrides"])] = (r["status"], r["metrics"], r["epochs"], r["global_step"])
    return found


def checkpoint_step(path: Path, _seen: dict = {}) -> int:  # noqa: B006 (a cache)
    """The step ``path`` holds (-1: none yet); read again only when the file changed."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return -1
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _seen:
        _seen[key] = torch.load(path, weights_only=True, map_location="cpu")["global_step"]
    return _seen[key]


def mid_epoch_checkpoint(job_dir: Path) -> Callable[[], bool]:
    last = job_dir / "checkpoints" / "last.ckpt"
    return lambda: (step := checkpoint_step(last)) > 0 and step % STEPS_PER_EPOCH != 0


def kill_9_when(condition: Callable[[], bool], args: list[str], cwd: Path) -> None:
    """Start the sweep in its own process group; once ``condition`` holds (checked with the
    group stopped, so that no state is passed over), ``kill -9`` the whole group."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar_lightning.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        os.killpg(proc.pid, signal.SIGSTOP)
        if condition():
            break
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail(f"the sweep ended before it was killed:\n{proc.stderr.read()[-3000:]}")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


@contextlib.contextmanager
def sigterm_when(condition: Callable[[], bool]) -> Iterator[list[bool]]:
    """SIGTERM this process once ``condition`` holds (a sweep running in it). A SIGTERM that
    lands outside training is caught here rather than ending pytest."""
    sent, done = [], threading.Event()

    def watch() -> None:
        while not done.is_set():
            if condition():
                sent.append(True)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.005)

    previous = signal.signal(signal.SIGTERM, lambda *a: None)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield sent
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.slow
def test_a_grid_sweep_killed_twice_ends_like_an_uninterrupted_one(tmp_path):
    sweep, reference = tmp_path / "sweep", tmp_path / "reference"
    command = ["-m", *GRID, *JOB]

    # 1. kill -9 of the whole process group, mid-epoch in job 1: job 0 is done, job 1 has a
    # checkpoint and no record.
    kill_9_when(mid_epoch_checkpoint(sweep / "1"), [*command, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0"]
    assert not (sweep / "2").exists()

    # 2. Continue it with resume=; SIGTERM it mid-epoch in job 2. Job 1 is continued from its
    # checkpoint; the sweep (not only job 2) stops, saying how to go on.
    with sigterm_when(mid_epoch_checkpoint(sweep / "2")) as sent:
        proc = run_cli_in_process("-m", f"resume={sweep}", cwd=tmp_path)
    assert sent and proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert f"continue it with: python -m cifar_lightning.train -m resume={sweep}" in proc.stderr
    said = proc.stdout + proc.stderr
    assert "Job 0 completed in an earlier session: not run again." in said
    assert "Job 1 continues from" in said
    statuses = {
        p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")
    }
    assert statuses == {"0": "completed", "1": "completed", "2": "interrupted"}
    assert not (sweep / "3").exists()

    # A job that failed (here: its record says so, as an out-of-memory job's would) is run
    # again from the start, the failed attempt kept aside.
    record = sweep / "0" / "metrics.json"
    record.write_text(record.read_text().replace('"completed"', '"failed"', 1))

    # 3. The sweep's own command again, pointed at its directory: it finishes.
    proc = run_cli_in_process(*command, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert "Job 2 continues from" in said and "Job 1 completed in" in said
    assert "Job 0 failed in an earlier session" in said
    assert (
        json.loads((sweep / "0" / ".failed" / "0" / "metrics.json").read_text())["status"]
        == "failed"
    )

    proc = run_cli_in_process(*command, f"hydra.sweep.dir={reference}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = results(reference)
    assert len(expected) == 4 and all(r[0] == "completed" for r in expected.values())
    assert results(sweep) == expected

    # Other overrides in a sweep's directory would mix two sweeps: refused before any job.
    proc = run_cli_in_process("-m", "seed=0,1,2", *JOB, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 2 and "holds a sweep of other overrides" in proc.stderr
    assert results(sweep) == expected


@pytest.mark.slow
def test_a_stopped_search_continues_to_n_trials(tmp_path):
    sweep = tmp_path / "search"
    search = [
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner=none",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.study_name=s",
        *JOB,
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
    ]
    with sigterm_when(mid_epoch_checkpoint(sweep / "1")) as sent:
        proc = run_cli_in_process(*search, cwd=tmp_path)
    assert sent and proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert trials[1].user_attrs["interrupted"]
    assert trials[2].system_attrs["fixed_params"] == trials[1].params  # queued again

    # What kill -9 leaves: a trial of this sweep still RUNNING in the study (here the
    # re-queued one, taken by a session that died before its job made a directory).
    orphan = optuna.load_study(study_name="s", storage=storage).ask(trials[1].distributions)
    orphan.set_user_attr("sweep_dir", str(sweep.resolve()))
    orphan.set_user_attr("job", 2)

    proc = run_cli_in_process("-m", f"resume={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "This sweep has 1 of its 3 trials already." in proc.stdout + proc.stderr
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    assert all(t.user_attrs["interrupted"] for t in trials if t.state.name == "FAIL")
    assert trials[3].params == trials[1].params  # the cut-off parameters, tried again
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["trials"]["complete"] == 3
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1", "2", "3"]

    # The same search never stopped: the same trials, proposed and scored the same.
    reference = tmp_path / "reference"
    search[search.index(f"hydra.sweep.dir={sweep}")] = f"hydra.sweep.dir={reference}"
    proc = run_cli_in_process(*search, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def completed(where: Path) -> list[tuple[dict, float]]:
        study = optuna.load_study(study_name="s", storage=f"sqlite:///{where / 'optuna.db'}")
        return [(t.params, t.value) for t in study.trials if t.state.name == "COMPLETE"]

    assert completed(sweep) == completed(reference)
