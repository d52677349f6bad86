"""What every command does before any work: a typo is one message and exit code 2, the
command line loads no torch (so it answers in about a second), shell completion works."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, run_cli_in_process

# (command, its arguments, what the message says): every command, a typo each (train's many
# more: tests/test_bad_inputs.py)
TYPOS = [
    ("train", ["aug=typo"], "aug=typo is not an option of the aug group"),
    ("evaluate", ["aug=typo"], "aug=typo: this command takes no aug option"),
    ("predict", ["aug=typo"], "aug=typo: this command takes no aug option"),
    ("export", ["formatt=onnx"], "formatt is not a config key"),
    ("bench", ["aug=typo"], "aug=typo is not an option of the aug group"),
    ("summary", ["aug=typo"], "aug=typo is not an option of the aug group"),
    ("show_aug", ["aug=typo"], "aug=typo is not an option of the aug group"),
    ("reproduce", ["aug=typo"], "aug=typo: this command takes no aug option"),
    ("report", ["aug=typo"], "aug=typo: report takes directories, not overrides"),
    ("airbench_compare", ["aug=typo"], "the following arguments are required: --airbench"),
    (
        "airbench_compare",
        ["--airbench", "a.py", "--data", "d.tar.gz", "aug=typo"],
        "aug=typo is not an option of the aug group",
    ),
    # values the commands that read a checkpoint check before loading torch and it
    ("evaluate", [], "no checkpoint given"),
    ("evaluate", ["ckpt_path=x.ckpt", "split=tset"], "split='tset' must be test or val"),
    ("predict", ["ckpt_path=x.ckpt", "images=a.jpg", "topk=0"], "topk=0 must be at least 1"),
]


@pytest.mark.parametrize(
    ("command", "args", "message"), TYPOS, ids=[f"{c}-{(a or ['none'])[-1]}" for c, a, _ in TYPOS]
)
def test_a_typo_is_one_message_and_exit_code_2(tmp_path, command, args, message):
    proc = run_cli_in_process(*args, cwd=tmp_path, command=command)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"error: {message}"), proc.stderr[-2000:]
    assert proc.stderr.count("error: ") == 1 and "\n  fix: " in proc.stderr
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr.split("fix:")[0]
    assert list(tmp_path.iterdir()) == [], "a typo writes nothing"


COMMANDS = ["train", "evaluate", "predict", "export", "bench", "summary", "show_aug"]
COMMANDS += ["reproduce", "report", "airbench_compare"]

# Every command module imported, and a schema error (composed and checked: the path of
# --cfg and --help too) and a typo run, in one fresh interpreter: none may import torch.
PROBE = """
import contextlib, importlib, io, sys
from hydra.core.global_hydra import GlobalHydra
for command in {commands}:
    importlib.import_module("cifar_lightning." + command)
runs = [("train", ["optim.lr=-1"]), ("summary", ["aug=typo"]), ("evaluate", [])]
for command, args in runs:
    sys.argv = [command, *args]
    GlobalHydra.instance().clear()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with contextlib.suppress(SystemExit):
            importlib.import_module("cifar_lightning." + command).main()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning")))
"""


def test_the_command_line_loads_no_torch(tmp_path):
    """torch and Lightning take 10+ s to import on a small CPU: only a run may load them."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(commands=COMMANDS)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", proc.stdout[-3000:]


@pytest.mark.parametrize(("command", "group"), [("train", "model"), ("summary", "model")])
def test_shell_completion_lists_a_groups_options(tmp_path, monkeypatch, command, group):
    """What ``eval "$(cifar-train -sc install=bash)"``'s script asks at each TAB."""
    monkeypatch.setenv("COMP_LINE", f"cifar-{command} {group}=")
    proc = run_cli_in_process("-sc", "query=bash", cwd=tmp_path, command=command)
    assert proc.returncode == 0, proc.stderr[-2000:]
    options = proc.stdout.split()
    assert {f"{group}=resnet9", f"{group}=depthwise", f"{group}=simple_cnn"} <= set(options)


def test_every_command_is_a_console_script_and_checked_here():
    """A new cifar_lightning/<command>.py gets its cifar-<command> script and a typo test."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    shared = {"__init__", "errors", "atomic"}
    modules = {p.stem for p in (REPO / "cifar_lightning").glob("*.py")} - shared
    assert scripts == {f"cifar-{m.replace('_', '-')}": f"cifar_lightning.{m}:main" for m in modules}
    assert set(COMMANDS) == modules == {c for c, _, _ in TYPOS}
