"""Architectures: exact sizes, output shapes, and the shared optimization logic."""

from __future__ import annotations

import pytest
import torch

from cifar_lightning.training.architectures import DepthwiseClassifier
from cifar_lightning.training.classifier import ImageClassifier

ONECYCLE = {
    "interval": "step",
    "scheduler": {
        "_target_": "torch.optim.lr_scheduler.OneCycleLR",
        "_partial_": True,
        "max_lr": 0.1,
    },
}


def test_depthwise_has_the_seed_parameter_count():
    assert DepthwiseClassifier().num_parameters == 82_474


@pytest.mark.parametrize("batch", [1, 7])
def test_depthwise_outputs_logits(batch):
    model = DepthwiseClassifier().eval()
    assert model(torch.randn(batch, 3, 32, 32)).shape == (batch, 10)


def test_num_classes_reaches_the_head():
    model = DepthwiseClassifier(class_names=["a", "b", "c", "d"])
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_hyperparameters_are_plain_data_and_rebuild_the_model(tmp_path):
    """A checkpoint alone must rebuild the model (evaluate/predict rely on it)."""
    model = DepthwiseClassifier(
        net={"_target_": "cifar_lightning.models.depthwise.DepthwiseNet", "dropout": 0.2},
        loss={"_target_": "torch.nn.CrossEntropyLoss", "label_smoothing": 0.1},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01},
    )
    hp = dict(model.hparams)
    assert hp["net"]["dropout"] == 0.2 and hp["loss"]["label_smoothing"] == 0.1
    assert hp["class_names"][3] == "cat" and len(hp["mean"]) == 3
    path = tmp_path / "m.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": hp,
            "pytorch-lightning_version": "2.6.0",
        },
        path,
    )
    again = DepthwiseClassifier.load_from_checkpoint(path, weights_only=True)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model.eval()(x), again.eval()(x))


def test_optimizer_comes_from_its_partial_config():
    model = DepthwiseClassifier(
        optimizer={
            "_target_": "torch.optim.AdamW",
            "_partial_": True,
            "lr": 0.003,
            "weight_decay": 0.1,
        }
    )
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["lr"] == 0.003
    assert optimizer.param_groups[0]["weight_decay"] == 0.1


def test_onecycle_length_comes_from_the_trainer():
    model = DepthwiseClassifier(scheduler=ONECYCLE)

    class FakeTrainer:
        estimated_stepping_batches = 123

    model.trainer = FakeTrainer()  # type: ignore[assignment]
    config = model.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert scheduler.total_steps == 123
    assert config["lr_scheduler"]["interval"] == "step"


def test_onecycle_survives_a_five_step_run():
    """torch's OneCycleLR divides by pct_start * total_steps - 1: zero for 0.2 x 5 steps."""
    sched = {**ONECYCLE, "scheduler": {**ONECYCLE["scheduler"], "pct_start": 0.2}}
    model = DepthwiseClassifier(scheduler=sched)

    class FakeTrainer:
        estimated_stepping_batches = 5

    model.trainer = FakeTrainer()  # type: ignore[assignment]
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert max(lrs) > 0.09 and lrs[-1] < 1e-4  # up to max_lr, down to max_lr / 1000


def test_label_smoothing_changes_the_loss():
    logits, y = torch.tensor([[4.0, 0.0]]), torch.tensor([0])
    net = {"_target_": "torch.nn.Identity"}
    plain = ImageClassifier(net, class_names=["a", "b"]).criterion(logits, y)
    loss = {"_target_": "torch.nn.CrossEntropyLoss", "label_smoothing": 0.2}
    smooth = ImageClassifier(net, loss=loss, class_names=["a", "b"]).criterion(logits, y)
    assert smooth > plain


def test_no_metric_checks_its_arguments_on_every_update():
    """validate_args=True runs torch.unique on the targets: a host sync every training step."""
    from torchmetrics import Metric

    from cifar_lightning.training.predictions import PredictionCollector

    model, collector = DepthwiseClassifier(), PredictionCollector(["a", "b"], [0.5] * 3, [0.2] * 3)
    metrics = [m for m in [*model.modules(), collector.confusion] if isinstance(m, Metric)]
    checked = [m for m in metrics if hasattr(m, "validate_args")]
    # train/val/test accuracy, test top-5, test ECE and MCE, the confusion matrix
    assert len(checked) == 7
    assert not any(m.validate_args for m in checked)
