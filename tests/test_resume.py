"""Never lose a run: a run killed mid-epoch and resumed ends exactly like one never killed.

The reference run trains uninterrupted; the others are real processes stopped from outside
(SIGKILL, SIGTERM) in the middle of an epoch and then resumed with ``resume=RUN_DIR``. Final
weights, metrics.json and every TensorBoard curve — step by step — must be identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2

from conftest import run_cli_in_process

STEPS_PER_EPOCH = 8
RUN = [
    "data=fake",
    "data.num_workers=0",
    f"data.fake_train_size={32 + 16 * STEPS_PER_EPOCH}",
    "data.fake_test_size=32",
    "data.val_size=32",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "callbacks.periodic_checkpoint.train_time_interval=null",
    "callbacks.periodic_checkpoint.every_n_train_steps=5",
    "seed=3",
    # Events on disk at once, so that a kill leaves steps logged after the last checkpoint.
    "+logger.tensorboard.flush_secs=0",
]


def start(run_dir: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "cifar_lightning.train", *RUN, f"hydra.run.dir={run_dir}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def logged_steps(run_dir: Path, tag: str = "train/loss") -> list[int]:
    steps = []
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        for record in RawEventFileLoader(str(path)).Load():
            event = event_pb2.Event.FromString(record)
            if any(v.tag == tag for v in event.summary.value):
                steps.append(event.step)
    return steps


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run made no progress")
        time.sleep(0.05)


def checkpoint_step(path: Path) -> int:
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


def curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def assert_same_run(resumed: Path, reference: Path) -> None:
    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    assert b["status"] == "completed"
    assert b["metrics"] == a["metrics"]
    assert (b["epochs"], b["global_step"]) == (a["epochs"], a["global_step"])
    wa = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "the final weights differ"
    ca, cb = curves(reference), curves(resumed)
    assert ca.keys() == cb.keys()
    for tag in ca:
        assert cb[tag] == ca[tag], f"{tag} differs from the uninterrupted run"
    # In the files themselves (not only as TensorBoard shows them): every step exactly once.
    assert logged_steps(resumed) == list(range(2 * STEPS_PER_EPOCH))
    assert logged_steps(resumed, "val/acc") == logged_steps(reference, "val/acc")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run, never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    proc = run_cli_in_process(*RUN, f"hydra.run.dir={root / 'run'}", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_is_exact(reference, tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = start(run, tmp_path)

    # Kill once a mid-epoch checkpoint exists and two steps after it are logged (the crash
    # leaves them behind; the resumed run must replace them). SIGSTOP first, so that what is
    # on disk cannot change between the check and the kill.
    def orphans_on_disk() -> bool:
        if not last.is_file():
            return False
        step = checkpoint_step(last)
        return step % STEPS_PER_EPOCH != 0 and max(logged_steps(run), default=-1) >= step + 1

    def frozen_with_orphans() -> bool:
        if not orphans_on_disk():
            return False
        proc.send_signal(signal.SIGSTOP)
        if orphans_on_disk():
            return True
        proc.send_signal(signal.SIGCONT)
        return False

    wait_for(frozen_with_orphans, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = checkpoint_step(last)
    assert step % STEPS_PER_EPOCH != 0, "the checkpoint should be from the middle of an epoch"
    assert max(logged_steps(run)) > step  # steps logged after the checkpoint: orphans

    resumed = run_cli_in_process(f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) > 1  # same run dir
    assert_same_run(run, reference)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_is_exact(reference, tmp_path):
    run = tmp_path / "run"
    proc = start(run, tmp_path)
    wait_for(lambda: max(logged_steps(run), default=-1) >= 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)

    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "error: training stopped on SIGTERM at step" in stderr
    assert f"continue it with: python -m cifar_lightning.train resume={run}" in stderr
    assert "Traceback" not in stderr
    results = json.loads((run / "metrics.json").read_text())
    assert results["status"] == "interrupted" and results["resume_with"].endswith(f"={run}")
    # The checkpoint holds exactly the step the run stopped at.
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == results["global_step"]

    resumed = run_cli_in_process(f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(run, reference)
