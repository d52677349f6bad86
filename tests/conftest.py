"""Shared fixtures: composed configs on fake data, synthetic image folders, the CLI runner.

Every test writes under pytest's tmp_path; nothing touches the repo's outputs/ or data/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_lightning.run.config import compose_config

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Small, fast, CPU-only runs: tests override only what they are about.
FAST = [
    "debug=fast",
]


@pytest.fixture
def make_cfg(tmp_path):
    """Compose ``train.yaml`` with the fast overrides, writing into ``tmp_path``."""

    def _make(*overrides: str, fast: bool = True):
        paths = [f"paths.output_dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}"]
        return compose_config([*(FAST if fast else []), *paths, *overrides])

    return _make


def write_image_folder(
    root: Path, per_class: int = 3, classes=CLASSES, size=(32, 32), fmt: str = "PNG"
) -> Path:
    """A tiny train/<class>/ + test/<class>/ tree of random images."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{i:04d}.{fmt.lower()}", format=fmt)
    return root


def tar_folder(folder: Path, archive: Path, top: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(folder / split, arcname=f"{top}/{split}" if top else split)
    return archive


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "folder")


def run_cli(
    module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would, outputs under ``cwd``."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The CIFAR-10 JPEG copy, from CIFAR_LIGHTNING_REAL_DATA; the test skips without it."""
    value = os.environ.get("CIFAR_LIGHTNING_REAL_DATA")
    if not value:
        pytest.skip(
            "real CIFAR-10 not configured: set CIFAR_LIGHTNING_REAL_DATA to "
            "cifar10-jpeg.tar.gz (or a folder of that layout); .ci/run does"
        )
    path = Path(value)
    if not path.exists():
        pytest.skip(f"CIFAR_LIGHTNING_REAL_DATA={value} does not exist")
    return path


def assert_png(path: Path, min_size: tuple[int, int] = (200, 150)) -> None:
    """A complete, decodable PNG of at least ``min_size`` pixels."""
    with Image.open(path) as img:
        assert img.format == "PNG", path
        img.verify()
    with Image.open(path) as img:
        assert img.width >= min_size[0] and img.height >= min_size[1], (path, img.size)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny finished training run on fake data, shared by the results tests.

    Two epochs of 10 steps: its checkpoints feed evaluate/predict, its run dir the checks of
    what training leaves behind (pictures, TensorBoard). Returns (run dir, results).
    """
    from cifar_lightning.run.train import train

    out = tmp_path_factory.mktemp("trained_run")
    cfg = compose_config(
        [*FAST, f"paths.output_dir={out}", f"paths.data_dir={out / 'data'}", "trainer.max_epochs=2"]
    )
    return out, train(cfg)


def run_cli_in_process(
    *args: str, cwd: Path, command: str = "train"
) -> subprocess.CompletedProcess:
    """``cifar-<command> args`` through its real entry point (``main``), in this process.

    Same argument handling, Hydra composition, error printing and exit code as
    :func:`run_cli`, without the ~8 s of interpreter and import start-up per call on a
    2-core machine: for the many bad-input checks. Logging, argv, cwd and Hydra's global
    state are put back afterwards.
    """
    import contextlib
    import importlib
    import io
    import logging

    from hydra.core.global_hydra import GlobalHydra

    entry = importlib.import_module(f"cifar_lightning.{command}")

    root = logging.getLogger()
    saved = (sys.argv, root.handlers[:], root.level, os.getcwd())
    out, err = io.StringIO(), io.StringIO()
    code = 0
    GlobalHydra.instance().clear()
    try:
        sys.argv = [f"cifar-{command}", *args]
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                entry.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved[0]
        root.handlers[:] = saved[1]
        root.setLevel(saved[2])
        os.chdir(saved[3])
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess([command, *args], code, out.getvalue(), err.getvalue())
