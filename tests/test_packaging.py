"""An installed (non-editable) copy finds its configs: the wheel carries conf/ inside."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.mark.slow
def test_wheel_carries_configs_and_composes_outside_the_repo(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("cifar_lightning-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cifar_lightning/conf/train.yaml" in names
    assert "cifar_lightning/conf/model/depthwise.yaml" in names
    # The Optuna sweeper, where Hydra looks for plugins: a namespace package other plugins share.
    assert "hydra_plugins/cifar_lightning_optuna/sweeper.py" in names
    assert "hydra_plugins/__init__.py" not in names

    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import cifar_lightning, cifar_lightning.run.config as c;"
        "cfg = c.compose_config(['model=depthwise', 'data=fake']);"
        "print(cifar_lightning.__file__); print(c.CONFIG_DIR); print(cfg.model._target_)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        check=True,
        timeout=120,
    ).stdout.splitlines()
    assert out[0].startswith(str(site)), "imported the repo copy, not the installed one"
    assert out[1] == str(site / "cifar_lightning" / "conf")
    assert out[2] == "cifar_lightning.training.architectures.DepthwiseClassifier"
