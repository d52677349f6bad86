"""Every bad input a user can give: one clear message, the right exit code, nothing damaged.

A good run is made first (module fixture) and its directory hashed; after every bad input
the test checks the message, the exit code, that no new run directory was left behind, and
that the good run's files are byte-for-byte unchanged.

The cases go through the real command-line entry point (``train.main``: argument handling,
Hydra, error printing, exit code) in this process — an interpreter start costs ~8 s here —
and a sample of them also as real subprocesses, which additionally shows no traceback.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from cifar_lightning.run.checkpoints import make_record
from cifar_lightning.run.resume import override_key
from cifar_lightning.training.architectures import DepthwiseClassifier
from conftest import run_cli, run_cli_in_process, write_image_folder

FAST = [
    "debug=fast",
    "data.fake_train_size=96",
    "data.fake_test_size=32",
    "data.val_size=32",
    "data.batch_size=16",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
]


@dataclass
class World:
    """The good run and the files the bad inputs point at."""

    root: Path  # where the CLI runs; outputs/ under it
    data: Path
    good: Path  # the good run's directory
    files: dict[str, Path] = field(default_factory=dict)

    def args(self, *extra: str) -> list[str]:
        """FAST plus ``extra``; a key given in ``extra`` replaces FAST's; flags (``-m``) first,
        where Hydra's argument parser wants them."""
        given = {override_key(a) for a in extra}
        base = [a for a in (*FAST, f"paths.data_dir={self.data}") if override_key(a) not in given]
        flags = [a for a in extra if a.startswith("-")]
        return [*flags, *base, *(a for a in extra if not a.startswith("-"))]


def tree_hash(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def save_checkpoint(path: Path, model: torch.nn.Module, **entries) -> Path:
    torch.save({"state_dict": model.state_dict(), **entries}, path)
    return path


class _Payload:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad_inputs")
    w = World(root=root, data=root / "data", good=root / "outputs" / "good")
    proc = run_cli_in_process(*w.args(f"hydra.run.dir={w.good}"), cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (w.good / "checkpoints" / "last.ckpt").is_file()
    f = w.files
    files = root / "files"

    # image folders, each broken one way (classes a, b)
    def folder(name: str) -> Path:
        return write_image_folder(files / name, per_class=2, classes=["a", "b"])

    corrupt = folder("corrupt")
    (corrupt / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    f["corrupt"] = corrupt
    wrong = folder("wrong_size")
    write_image_folder(files / "big", per_class=1, classes=["a"], size=(40, 30))
    shutil.copy(files / "big" / "train" / "a" / "0000.png", wrong / "test" / "b" / "big.png")
    f["wrong_size"] = wrong
    empty = folder("empty_class")
    for p in (empty / "train" / "b").iterdir():
        p.unlink()
    f["empty_class"] = empty
    f["small"] = folder("small")
    no_test_b = files / "no_test_b.tar.gz"
    with tarfile.open(no_test_b, "w:gz") as tar:
        tar.add(f["small"] / "train", arcname="train")
        tar.add(f["small"] / "test" / "a", arcname="test/a")
    f["no_test_b"] = no_test_b
    truncated = files / "truncated.tar.gz"
    with tarfile.open(truncated, "w:gz") as tar:
        tar.add(f["small"] / "train", arcname="train")
        tar.add(f["small"] / "test", arcname="test")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    f["truncated"] = truncated
    planted = files / "planted_cifar"
    planted.mkdir()
    (planted / "cifar-10-python.tar.gz").write_bytes(b"not the real archive" * 100)
    f["planted"] = planted
    f["not_a_run"] = files / "not_a_run"
    f["not_a_run"].mkdir()

    # checkpoints, each bad one way
    model = DepthwiseClassifier()
    good_ckpt = w.good / "checkpoints" / "last.ckpt"
    cut = files / "truncated.ckpt"
    cut.write_bytes(good_ckpt.read_bytes()[:5000])
    f["ckpt_truncated"] = cut
    f["ckpt_foreign"] = save_checkpoint(files / "foreign.ckpt", model, epoch=0, global_step=0)
    f["ckpt_weights_only"] = save_checkpoint(
        files / "weights_only.ckpt",
        model,
        hyper_parameters=dict(model.hparams),
        cifar_lightning=make_record(model, None),
    )
    other = DepthwiseClassifier(class_names=list("abcde"))
    full = torch.load(good_ckpt, weights_only=True)
    full["state_dict"] = other.state_dict()
    torch.save(full, files / "other_shape.ckpt")
    f["ckpt_other_shape"] = files / "other_shape.ckpt"
    f["marker"] = files / "pwned"
    torch.save(
        {"state_dict": {}, "cifar_lightning": {}, "x": _Payload(f["marker"])}, files / "evil.ckpt"
    )
    f["ckpt_evil"] = files / "evil.ckpt"
    # a second finished run whose last.ckpt got truncated
    broken_run = root / "outputs" / "broken_run"
    shutil.copytree(w.good, broken_run)
    (broken_run / "checkpoints" / "last.ckpt").write_bytes(good_ckpt.read_bytes()[:3000])
    f["broken_run"] = broken_run
    return w


# (id, extra args, exit code, expected message); "{name}" is replaced by world.files[name]
CASES = [
    # --- config values: exit 2, before any run directory exists ---
    ("lr_negative", ["optim.lr=-0.1"], 2, "optim.lr=-0.1 must be positive"),
    ("lr_not_a_number", ["optim.lr=abc"], 2, "optim.lr='abc' must be a number"),
    ("batch_size_zero", ["data.batch_size=0"], 2, "data.batch_size=0 must be at least 1"),
    ("batch_size_fraction", ["data.batch_size=1.5"], 2, "data.batch_size=1.5 must be a whole"),
    ("zero_epochs", ["trainer.max_epochs=0"], 2, "trainer.max_epochs=0 trains nothing"),
    ("endless", ["trainer.max_epochs=-1"], 2, "would train forever"),
    ("sync_bn_on_cpu", ["trainer.sync_batchnorm=true"], 2, "sync_batchnorm=true needs GPUs"),
    *[("gpu_without_one", ["trainer.accelerator=gpu"], 2, "asks for a GPU, but torch sees none")]
    * (not torch.cuda.is_available()),
    ("val_size_too_big", ["data.val_size=1000"], 2, "data.val_size=1000 leaves no training"),
    ("label_smoothing", ["loss.label_smoothing=1.5"], 2, "loss.label_smoothing=1.5 must be in"),
    ("dropout", ["model.net.dropout=2"], 2, "model.net.dropout=2 must be in [0, 1)"),
    ("seed_negative", ["seed=-1"], 2, "seed=-1 must be in [0, 2**32)"),
    ("not_a_bool", ["test.enabled=maybe"], 2, "test.enabled='maybe' must be true or false"),
    ("sched_interval", ["sched.interval=hourly"], 2, "sched.interval='hourly' must be step or"),
    ("unknown_option", ["model=resnet999"], 2, "model=resnet999 is not an option"),
    ("data_defaults", ["data=base"], 2, "use one of: data=cifar10, data=cifar100, data=fake"),
    ("unknown_key", ["optim.lrr=0.1"], 2, "optim.lrr is not a config key"),
    ("bad_optimizer_arg", ["+optim.lrr=0.1"], 2, "unexpected keyword argument 'lrr'"),
    ("torch_rejects", ["optim=adam", "optim.betas=[0.9,1.5]"], 2, "Invalid beta parameter"),
    ("group_removed", ["~optim"], 2, "no optim chosen"),
    ("unparsable", ["optim.lr=[1"], 2, "cannot read the override 'optim.lr=[1'"),
    ("bad_reference", ["optim.lr=${nope}"], 2, "Interpolation key 'nope' not found"),
    ("crop_too_big", ["aug.pipeline.transforms.0.size=48"], 2, "aug: the pipeline fails"),
    ("mix_alpha_zero", ["mix.mode=mixup", "mix.alpha=0"], 2, "mix.alpha=0 must be positive"),
    ("mix_mode", ["mix.mode=cutout"], 2, "mix.mode='cutout' must be one of mixup, cutmix"),
    ("ema_decay_one", ["ema.enabled=true", "ema.decay=1"], 2, "ema.decay=1 must be in (0, 1)"),
    ("ema_decay_negative", ["ema.decay=-0.5"], 2, "ema.decay=-0.5 must be in (0, 1)"),
    ("unknown_policy", ["aug=autoaugment", "aug.policy=cifar100"], 2, "aug.policy='cifar100'"),
    ("unknown_aug", ["aug=randaugmnt"], 2, "aug=randaugmnt is not an option of the aug group"),
    ("randaugment_magnitude", ["aug=randaugment", "aug.m=31"], 2, "aug.m=31 must be in 0..30"),
    ("erasing_probability", ["aug=trivialaugment", "aug.erasing=2"], 2, "aug.erasing=2 must be"),
    (  # every aug= option has a batched form now; one with it deleted stands for one without
        "no_batched_form_on_the_device_loader",
        ["aug=trivialaugment", "~aug.batched", "data.loader=device"],
        2,
        "aug=trivialaugment has no batched form",
    ),
    ("imagefolder_no_root", ["data=imagefolder"], 2, "data=imagefolder needs data.root"),
    ("bad_precision", ["trainer.precision=banana"], 2, "trainer: Precision 'banana' is invalid"),
    ("bad_accelerator", ["trainer.accelerator=banana"], 2, "invalid accelerator name"),
    ("ckpt_last_alone", ["ckpt_path=last"], 2, "ckpt_path=last needs the run to continue"),
    ("resume_missing", ["resume=no/such/run"], 2, "resume=no/such/run: no such directory"),
    ("resume_not_a_run", ["resume={not_a_run}"], 2, "is not a run directory"),
    ("resume_bad_value", ["resume={good}", "trainer.max_epochs=0"], 2, "max_epochs=0 trains"),
    ("resume_run_as_sweep", ["-m", "resume={good}"], 2, "that is not a sweep directory"),
    # a sweep: every job checked before the first trains; the message names the job
    ("sweep_bad_value", ["-m", "optim.lr=0.1,abc"], 2, "optim.lr=abc): optim.lr='abc' must be"),
    ("sweep_unknown_option", ["-m", "aug=none,typo"], 2, "aug=typo): aug=typo is not an option"),
    (
        "sweep_torch_rejects",
        ["-m", "optim=adam", "optim.betas=[0.9,0.99],[0.9,1.5]"],
        2,
        "optim.betas=[0.9,1.5]): optim: Invalid beta parameter",
    ),
    (
        "resume_longer_one_cycle",
        ["resume={good}", "trainer.max_epochs=3"],
        2,
        "cannot continue with trainer.max_epochs changed (1 -> 3)",
    ),
    (
        "resume_turning_ema_on",
        ["resume={good}", "ema.enabled=true"],
        2,
        "cannot continue with ema.enabled changed (False -> True)",
    ),
    (
        "resume_other_model",
        ["resume={good}", "model.net.dropout=0.5"],
        2,
        "dropout changed (0.05 ->",
    ),
    # --- data: exit 1, naming the file and the fix ---
    ("root_missing", ["data=imagefolder", "data.root=no/such/dir"], 1, "does not exist"),
    ("corrupt_image", ["data.root={corrupt}"], 1, "train/a/broken.jpg is not a readable image"),
    ("wrong_size", ["data.root={wrong_size}"], 1, "test/b/big.png is 40x30"),
    ("empty_class", ["data.root={empty_class}"], 1, "train/b/ holds no images"),
    ("class_missing_in_test", ["data.root={no_test_b}"], 1, "only in train: ['b']"),
    ("truncated_tarball", ["data.root={truncated}"], 1, "truncated or not a readable tar"),
    ("val_size_vs_folder", ["data.root={small}", "data.val_size=4"], 2, "data.val_size=4"),
    ("bad_md5", ["data=cifar10", "paths.data_dir={planted}"], 1, "fails its md5 check"),
    # --- checkpoints: exit 1 ---
    ("ckpt_missing", ["ckpt_path=no/such.ckpt"], 1, "no/such.ckpt does not exist"),
    ("ckpt_truncated", ["ckpt_path={ckpt_truncated}"], 1, "is corrupt or truncated"),
    ("ckpt_foreign", ["ckpt_path={ckpt_foreign}"], 1, "was not written by cifar-lightning"),
    ("ckpt_weights_only", ["ckpt_path={ckpt_weights_only}"], 1, "holds weights only"),
    ("ckpt_other_model", ["ckpt_path={ckpt_other_shape}"], 1, "does not fit this run's model"),
    ("ckpt_runs_code", ["ckpt_path={ckpt_evil}"], 1, "refusing to unpickle"),
    ("resume_corrupt_last", ["resume={broken_run}"], 1, "is corrupt or truncated"),
]
IMAGEFOLDER = {"corrupt_image", "wrong_size", "empty_class", "class_missing_in_test"}
IMAGEFOLDER |= {"truncated_tarball", "val_size_vs_folder"}


def expand(world: World, case_id: str, extra: list[str]) -> list[str]:
    names = {**world.files, "good": world.good}
    args = []
    for arg in extra:
        for name, path in names.items():
            arg = arg.replace("{" + name + "}", str(path))
        args.append(arg)
    if case_id in IMAGEFOLDER:
        args = ["data=imagefolder", "data.classes=[a,b]", "data.batch_size=2", *args]
    return world.args(*args)


def test_no_message_or_config_names_a_path_of_the_developers_machines():
    """A fix must work on the user's machine: ../shared/ exists only on ours."""
    from conftest import REPO

    files = [*(REPO / "cifar_lightning").rglob("*.py"), *(REPO / "conf").rglob("*.yaml")]
    named = [str(f.relative_to(REPO)) for f in files if "shared/" in f.read_text()]
    assert not named


def test_there_are_at_least_25_distinct_bad_inputs():
    assert len({c[0] for c in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize(("case_id", "extra", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, case_id, extra, code, message):
    before_good = tree_hash(world.good)
    before_broken = tree_hash(world.files["broken_run"])
    runs_before = sorted((world.root / "outputs").iterdir())

    proc = run_cli_in_process(*expand(world, case_id, extra), cwd=world.root)

    assert proc.returncode == code, proc.stderr[-3000:]
    assert "error: " in proc.stderr and message in proc.stderr, proc.stderr[-3000:]
    assert "  fix: " in proc.stderr, "every error names a fix"
    assert sorted((world.root / "outputs").iterdir()) == runs_before, "no run dir left behind"
    assert tree_hash(world.good) == before_good, "the earlier run's files changed"
    assert tree_hash(world.files["broken_run"]) == before_broken
    assert not world.files["marker"].exists(), "the malicious checkpoint ran code"


def test_download_with_a_wrong_checksum(world, monkeypatch, tmp_path):
    """No network needed: the "download" returns the wrong bytes."""
    import io
    import urllib.request

    class Response(io.BytesIO):
        def __init__(self, request) -> None:
            super().__init__(b"corrupted download" * 1000)
            self.url = getattr(request, "full_url", request)
            self.headers = {"content-length": "18000"}
            self.length = 18000
            self.status = 200

    monkeypatch.setattr(urllib.request, "urlopen", lambda request, *a, **k: Response(request))
    proc = run_cli_in_process(
        *world.args("data=cifar10", f"paths.data_dir={tmp_path}"), cwd=world.root
    )
    assert proc.returncode == 1, proc.stderr
    archive = tmp_path / "cifar-10-python.tar.gz"
    assert f"error: {archive} fails its md5 check" in proc.stderr
    assert f"delete {archive}" in proc.stderr


def test_a_diverging_run_stops_and_says_where(world):
    """optim.lr=1e6: NaN within a few steps; the run stops and records why."""
    run = world.root / "diverged"
    proc = run_cli_in_process(
        *world.args(
            "optim.lr=1e6", "sched=none", "trainer.limit_train_batches=5", f"hydra.run.dir={run}"
        ),
        cwd=world.root,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: training diverged: the loss became nan at step" in proc.stderr
    assert "lr 1e+06" in proc.stderr
    import json

    results = json.loads((run / "metrics.json").read_text())
    assert results["status"] == "failed" and "diverged" in results["error"]
    assert {"metrics", "params", "global_step", "run_dir"} <= set(results)


SUBPROCESS_SAMPLE = ["lr_not_a_number", "unknown_option", "sweep_bad_value", "corrupt_image"]
SUBPROCESS_SAMPLE += ["ckpt_runs_code"]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", SUBPROCESS_SAMPLE)
def test_bad_input_as_a_real_process(world, case_id):
    _, extra, code, message = next(c for c in CASES if c[0] == case_id)
    before = tree_hash(world.good)
    runs_before = sorted((world.root / "outputs").iterdir())
    proc = run_cli("cifar_lightning.train", *expand(world, case_id, extra), cwd=world.root)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "error: " in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert sorted((world.root / "outputs").iterdir()) == runs_before
    assert tree_hash(world.good) == before
    assert not world.files["marker"].exists()
