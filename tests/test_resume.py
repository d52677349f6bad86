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
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2

from cifar_lightning.errors import RunInterrupted
from cifar_lightning.run.loggers import events_dir
from conftest import run_cli_in_process

STEPS_PER_EPOCH = 8
RUN = [
    "debug=fast",
    f"data.fake_train_size={32 + 16 * STEPS_PER_EPOCH}",
    "data.fake_test_size=32",
    "data.val_size=32",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "callbacks.periodic_checkpoint.train_time_interval=null",
    "callbacks.periodic_checkpoint.every_n_train_steps=5",
    "seed=3",
    # Events on disk within 50 ms, so that a kill leaves steps logged after the last
    # checkpoint. (0 would make TensorBoard's writer thread spin, slowing everything.)
    "+logger.tensorboard.flush_secs=0.05",
]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "cifar_lightning.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def event_steps(log_dir: Path, tag: str) -> list[int]:
    """The steps ``tag`` was logged at, as written in the files (no TensorBoard purging)."""
    steps = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for record in RawEventFileLoader(str(path)).Load():
            event = event_pb2.Event.FromString(record)
            if any(v.tag == tag for v in event.summary.value):
                steps.append(event.step)
    return steps


def logged_steps(run_dir: Path, tag: str = "train/loss") -> list[int]:
    return event_steps(events_dir(run_dir), tag)


def wait_for(condition, proc: subprocess.Popen, run: Path, timeout: float = 600) -> None:
    """Poll until ``condition()`` holds, and return with the process stopped (SIGSTOP) there.

    Once the process writes its TensorBoard events it is stepped in short slices, with a
    check between slices, so that no state it passes through is missed (a whole run here
    takes about a second).
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run made no progress")
        training = any((run / "tensorboard").glob(f"*/events.out.tfevents.*.{proc.pid}.*"))
        if training:
            proc.send_signal(signal.SIGSTOP)
        if training and condition():
            return
        if training:
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.01 if training else 0.05)


def checkpoint_step(path: Path) -> int:
    if not path.is_file():
        return -1
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


def curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(events_dir(run_dir))).Reload()
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


class SigtermInEpochZerosLastBatch(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == STEPS_PER_EPOCH - 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_run_stopped_at_an_epoch_end_resumes_exactly(reference, tmp_path, monkeypatch):
    """A stop during an epoch's last batch saves after that epoch's validation (a save before
    it, Lightning would resume by skipping the validation); the resumed epoch's train/loss_epoch
    and train/acc start from empty accumulators, not the finished epoch's."""
    from cifar_lightning.run import train as train_module

    real = train_module.build_callbacks
    extra = SigtermInEpochZerosLastBatch()
    monkeypatch.setattr(train_module, "build_callbacks", lambda cfg: [*real(cfg), extra])
    run = tmp_path / "run"
    stopped = run_cli_in_process(*RUN, f"hydra.run.dir={run}", cwd=tmp_path)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert f"stopped on SIGTERM at step {STEPS_PER_EPOCH} " in stopped.stderr
    assert logged_steps(run, "val/acc") == [STEPS_PER_EPOCH - 1]  # epoch 0's, before the save
    monkeypatch.undo()
    resumed = run_cli_in_process(f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(run, reference)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run, never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    proc = run_cli_in_process(*RUN, f"hydra.run.dir={root / 'run'}", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


@pytest.mark.slow
def test_sigterm_then_kill_9_then_resume_ends_like_an_uninterrupted_run(reference, tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"

    # 1. SIGTERM early in epoch 0: the step is finished, saved, and the run says how to go on.
    proc = start([*RUN, f"hydra.run.dir={run}"], tmp_path)
    wait_for(lambda: max(logged_steps(run), default=-1) >= 1, proc, run)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "error: training stopped on SIGTERM at step" in stderr
    assert f"continue it with: python -m cifar_lightning.train resume={run}" in stderr
    assert "Traceback" not in stderr
    results = json.loads((run / "metrics.json").read_text())
    assert results["status"] == "interrupted" and results["resume_with"].endswith(f"={run}")
    stopped = results["global_step"]
    assert checkpoint_step(last) == stopped  # the checkpoint holds the step it stopped at

    # 2. Resume it, then kill -9 once a mid-epoch checkpoint exists and steps after it are
    # logged: the crash leaves them behind, the next resume must replace them.
    proc = start([f"resume={run}"], tmp_path)

    def orphans_on_disk() -> bool:
        step = checkpoint_step(last)
        return (
            step > stopped
            and step % STEPS_PER_EPOCH != 0
            and max(logged_steps(run), default=-1) >= step + 1
        )

    wait_for(orphans_on_disk, proc, run)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(logged_steps(run)) > checkpoint_step(last)  # steps the crash left behind

    # 3. Resume again: same directory, same config, and the same run in the end.
    resumed = run_cli_in_process(f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len({p.name.split(".")[-2] for p in events_dir(run).glob("events.*")}) == 3
    assert_same_run(run, reference)


def test_resume_reruns_the_runs_own_command_line(tmp_path):
    from cifar_lightning.run.checkpoints import make_record
    from cifar_lightning.run.resume import expand_argv
    from cifar_lightning.training.architectures import DepthwiseClassifier

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(
        "- data=fake\n- trainer.max_epochs=2\n- seed=3\n- ckpt_path=old.ckpt\n"
    )
    (run / "checkpoints").mkdir()
    model = DepthwiseClassifier()
    torch.save(
        {"state_dict": model.state_dict(), "cifar_lightning": make_record(model, None)},
        run / "checkpoints" / "last.ckpt",
    )
    args = expand_argv([f"resume={run}", "trainer.max_epochs=3"])
    assert args == [
        "data=fake",
        "seed=3",
        f"resume={run}",
        "trainer.max_epochs=3",
        f"hydra.run.dir='{run.resolve()}'",
    ]


# --- the pieces, one by one ------------------------------------------------------------------


def fake_dm(num_workers: int = 0, seed: int = 0):
    from torchvision.transforms import v2

    from cifar_lightning.data import CIFAR10DataModule

    aug = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    dm = CIFAR10DataModule(
        source="fake",
        fake_train_size=112,
        fake_test_size=16,
        val_size=16,
        batch_size=16,
        num_workers=num_workers,
        aug=aug,
        shuffle_seed=seed,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def batches(loader, epoch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(epoch)
    return list(loader)


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


def test_epoch_order_and_augmentation_depend_only_on_seed_epoch_and_position():
    dm = fake_dm()
    first = batches(dm.train_dataloader())
    assert len(first) == 96 // 16
    assert same(first, batches(fake_dm().train_dataloader()))  # reproducible
    assert not same(first, batches(dm.train_dataloader(), epoch=1))  # a new order each epoch
    assert not same(first, batches(fake_dm(seed=1).train_dataloader()))
    # Worker processes draw the same augmentation as the main process.
    assert same(first, batches(fake_dm(num_workers=2).train_dataloader()))


def test_a_loader_restored_mid_epoch_yields_exactly_the_rest():
    dm = fake_dm()
    full = batches(dm.train_dataloader(), epoch=1)

    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    iterator = iter(loader)
    head = [next(iterator) for _ in range(2)]
    assert same(head, full[:2])
    assert dm.state_dict() == {"train_loader": {"epoch": 1, "batches": 2}}

    # A new process: the DataModule gets its state back before Lightning builds the loader.
    again = fake_dm()
    again.load_state_dict(dm.state_dict())
    resumed = again.train_dataloader()
    resumed.sampler.set_epoch(1)  # Lightning's set_epoch for the same epoch keeps the position
    assert same(list(resumed), full[2:])
    assert resumed.state_dict() == {"epoch": 1, "batches": len(full)}
    # The next epoch starts from its beginning.
    assert same(batches(resumed, epoch=2), batches(fake_dm().train_dataloader(), epoch=2))


def write_events(path: Path, wall_time: float, scalars: list[tuple[str, int]]) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter

    with open(path, "wb") as f:
        writer = RecordWriter(f)
        writer.write(
            event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2").SerializeToString()
        )
        for i, (tag, step) in enumerate(scalars):
            event = event_pb2.Event(wall_time=wall_time + i, step=step)
            event.summary.value.add(tag=tag, simple_value=float(step))
            writer.write(event.SerializeToString())


def test_a_resumed_session_supersedes_what_the_crashed_one_logged_after_its_checkpoint(tmp_path):
    from cifar_lightning.run.resume import drop_superseded_events

    # Session 1 crashed after logging steps 0-9; its checkpoint was at step 6. Session 2
    # logged from step 6 on; a test phase of session 2 wrote a second file.
    write_events(
        tmp_path / "events.out.tfevents.100.host.11.0",
        100,
        [("train/loss", s) for s in range(10)] + [("val/acc", 4), ("val/acc", 9)],
    )
    write_events(
        tmp_path / "events.out.tfevents.200.host.22.0",
        200,
        [("train/loss", s) for s in range(6, 12)] + [("val/acc", 9)],
    )
    write_events(tmp_path / "events.out.tfevents.300.host.22.1", 300, [("test/acc", 12)])

    assert drop_superseded_events(tmp_path) == 5  # train/loss 6-9, val/acc 9
    assert sorted(event_steps(tmp_path, "train/loss")) == list(range(12))
    assert sorted(event_steps(tmp_path, "val/acc")) == [4, 9]
    assert drop_superseded_events(tmp_path) == 0  # idempotent


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    from cifar_lightning.run.checkpoints import SafeCheckpointIO

    io = SafeCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    good = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert path.read_bytes() == good, "a failed save must leave the previous checkpoint"
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_resume_and_test_load_through_the_weights_only_reader(tmp_path):
    from cifar_lightning.errors import CheckpointError
    from cifar_lightning.run.checkpoints import SafeCheckpointIO

    evil = tmp_path / "evil.ckpt"
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "x": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        SafeCheckpointIO().load_checkpoint(evil)
    assert not marker.exists()


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(make_cfg, monkeypatch):
    from cifar_lightning.errors import TrainingDiverged
    from cifar_lightning.run.train import train
    from cifar_lightning.training.classifier import ImageClassifier

    real_step = ImageClassifier.training_step

    def poisoned(self, batch, batch_idx):
        loss = real_step(self, batch, batch_idx)
        return loss * float("nan") if self.trainer.global_step == 5 else loss

    monkeypatch.setattr(ImageClassifier, "training_step", poisoned)
    cfg = make_cfg(
        "sched=none",
        "callbacks.periodic_checkpoint.train_time_interval=null",
        "callbacks.periodic_checkpoint.every_n_train_steps=2",
    )
    with pytest.raises(TrainingDiverged) as error:
        train(cfg)
    assert "the loss became nan at step 5 (epoch 0, lr 0.05)" in error.value.problem
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert f"{last} (step 4), is kept" in error.value.fix
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 4
    weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    assert weights and all(torch.isfinite(v).all() for v in weights.values())
    text = (Path(cfg.paths.output_dir) / "metrics.json").read_text()
    results = json.loads(text)
    assert results["status"] == "failed" and "step 5" in results["error"]
    assert "NaN" not in text and "Infinity" not in text  # strict JSON


def test_non_finite_weights_are_never_checkpointed():
    from types import SimpleNamespace

    from cifar_lightning.errors import TrainingDiverged
    from cifar_lightning.training.callbacks import StopOnNonFiniteLoss

    module = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(global_step=7, current_epoch=1, checkpoint_callbacks=[])
    StopOnNonFiniteLoss().on_save_checkpoint(trainer, module, {})  # finite: fine
    with torch.no_grad():
        module.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="weights became NaN or infinite by step 7"):
        StopOnNonFiniteLoss().on_save_checkpoint(trainer, module, {})


class PressCtrlC(Callback):
    """SIGINT to this process at the third step, as Ctrl-C (or ``kill -INT``) sends it."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 2:
            os.kill(os.getpid(), signal.SIGINT)  # handled at once, mid-step


def train_pressing_ctrl_c(cfg):
    from cifar_lightning.run import train as train_module

    real = train_module.build_callbacks
    try:
        train_module.build_callbacks = lambda c: [*real(c), PressCtrlC()]
        with pytest.raises(RunInterrupted) as error:
            train_module.train(cfg)
    finally:
        train_module.build_callbacks = real
    return error.value


def test_ctrl_c_finishes_the_step_saves_and_stops(make_cfg):
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a background job
    cfg = make_cfg("trainer.max_epochs=2")
    error = train_pressing_ctrl_c(cfg)
    assert error.exit_code == 130
    assert "stopped on SIGINT at step 3 (epoch 0)" in error.problem
    assert checkpoint_step(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt") == 3
    results = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert results["status"] == "interrupted" and results["global_step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # put back as the run found it


def test_a_run_started_with_sigint_ignored_still_stops_cleanly_on_sigint(make_cfg):
    """A shell starts background jobs (``make test &``, nohup) with SIGINT ignored; a run
    there still saves and stops on ``kill -INT`` (README: Checkpoints and resuming), then
    puts the ignore back."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        cfg = make_cfg("trainer.max_epochs=2")
        error = train_pressing_ctrl_c(cfg)
        assert error.exit_code == 130 and "stopped on SIGINT at step 3" in error.problem
        assert checkpoint_step(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt") == 3
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_a_run_with_ema_and_mixing_resumes_exactly(tmp_path):
    """Ctrl-C mid-epoch, then ``resume``: the EMA (and its warm-up), the raw weights and every
    metric end as in the run never interrupted; mixing draws the same pairs and shares."""
    from cifar_lightning.run.config import compose_config
    from cifar_lightning.run.train import train

    def config(out: Path, *extra: str):
        return compose_config(
            [
                "debug=fast", f"paths.output_dir={out}", f"paths.data_dir={tmp_path / 'data'}",
                "ema.enabled=true", "mix.mode=both", "trainer.deterministic=true",
                "trainer.max_epochs=2", "trainer.limit_train_batches=4", "model=simple_cnn",
                "data.batch_size=16", "data.fake_test_size=32", "data.val_size=32",
                "trainer.num_sanity_val_steps=0", "trainer.limit_val_batches=1",
                "~callbacks.evaluation_figures", "~callbacks.aug_preview",
                "~callbacks.training_curves", *extra,
            ]
        )  # fmt: skip

    reference = train(config(tmp_path / "reference"))
    run = tmp_path / "run"
    error = train_pressing_ctrl_c(config(run))
    assert "stopped on SIGINT at step 3 (epoch 0)" in error.problem  # mid-epoch: 4 per epoch
    resumed = train(config(run, f"resume={run}"))
    assert resumed["status"] == "completed" and resumed["metrics"] == reference["metrics"]
    assert resumed["ema"] == reference["ema"] and reference["ema"]["updates"] == 8
    ours = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    theirs = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    for key in ("state_dict", "current_model_state", "averaging_state"):  # EMA, raw, counter
        assert ours[key].keys() == theirs[key].keys()
        assert all(torch.equal(ours[key][k], theirs[key][k]) for k in ours[key]), key


def test_a_run_recorded_before_ema_and_mix_existed_still_resumes_with_them_off(tmp_path):
    from cifar_lightning.errors import ConfigError
    from cifar_lightning.run.config import compose_config
    from cifar_lightning.run.resume import check_same_run

    def cfg(*extra: str):
        return compose_config(["debug=fast", f"paths.output_dir={tmp_path}", *extra])

    old = OmegaConf.to_container(cfg(), resolve=True)
    del old["ema"], old["mix"], old["model"]["mix"]  # as a run of 0.2.0 recorded its config
    checkpoint = {"cifar_lightning": {"config": old}}
    check_same_run(checkpoint, tmp_path / "last.ckpt", cfg())  # both off: the same run
    with pytest.raises(ConfigError, match="cannot continue with mix changed"):
        check_same_run(checkpoint, tmp_path / "last.ckpt", cfg("mix.mode=cutmix"))
    with pytest.raises(ConfigError, match="cannot continue with ema changed"):
        check_same_run(checkpoint, tmp_path / "last.ckpt", cfg("ema.enabled=true"))
