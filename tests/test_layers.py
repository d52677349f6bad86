"""Imports run one way (pyproject.toml's import-linter contracts), so a layer loads little."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_the_layers_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_a_net_loads_nothing_else_of_ours():
    probe = (
        "import sys, cifar_lightning.models.resnet9;"
        "print(sorted(m for m in sys.modules if m.startswith('cifar_lightning')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == str(
        ["cifar_lightning", "cifar_lightning.models", "cifar_lightning.models.resnet9"]
    )
