"""Checkpoints load weights-only, rebuild their model alone, and refuse anything else."""

from __future__ import annotations

import pytest
import torch

from cifar_lightning.errors import CheckpointError
from cifar_lightning.run.checkpoints import load_classifier, make_record, read_checkpoint
from cifar_lightning.training.architectures import DepthwiseClassifier


def save(model, path, record=True):
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    if record:
        checkpoint["cifar_lightning"] = make_record(model, {"data": {"source": "fake"}})
    torch.save(checkpoint, path)
    return path


def test_round_trip(tmp_path):
    net = {"_target_": "cifar_lightning.models.depthwise.DepthwiseNet", "dropout": 0.3}
    model = DepthwiseClassifier(net=net).eval()
    loaded, record = load_classifier(save(model, tmp_path / "m.ckpt"))
    assert isinstance(loaded, DepthwiseClassifier) and not loaded.training
    assert record["config"]["data"]["source"] == "fake"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.ckpt")
    good = save(DepthwiseClassifier(), tmp_path / "m.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(cut)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        read_checkpoint(tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not written by cifar-lightning"):
        read_checkpoint(save(DepthwiseClassifier(), tmp_path / "plain.ckpt", record=False))


class _Payload:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "cifar_lightning": {}, "x": _Payload(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_checkpoint(evil)
    assert not marker.exists()


def test_a_record_naming_a_foreign_class_is_refused(tmp_path):
    path = save(DepthwiseClassifier(), tmp_path / "m.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["cifar_lightning"]["model_class"] = "os.system"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"not one of cifar-lightning 0\.2\.0's models"):
        load_classifier(path)


def test_a_record_naming_a_net_that_is_not_a_module_is_refused(tmp_path):
    """The net's target is checked to be an nn.Module class before it is called."""
    path = save(DepthwiseClassifier(), tmp_path / "m.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["net"] = {"_target_": "os.system", "command": "false"}
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"'os\.system' is not an nn\.Module class"):
        load_classifier(path)
