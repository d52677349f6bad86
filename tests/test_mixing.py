"""MixUp / CutMix (``mix.*``): images and labels mixed by one share, soft targets that the loss
and label smoothing take as timm does, and training on both loaders with EMA on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cifar_lightning.run.checkpoints import load_classifier
from cifar_lightning.run.config import build
from cifar_lightning.run.train import train
from cifar_lightning.training.mixing import BatchMix, build_mix, dominant_label

K = 10


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 32, 32, generator=g)
    y = torch.arange(16) % K  # neighbours always differ: each mixed row has two classes
    return x, y


def shares(targets: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each image's share of its own label (the rest is its neighbour's, y.roll(1))."""
    return targets[torch.arange(len(y)), y]


def test_mixup_blends_images_and_labels_by_one_share(batch):
    x, y = batch
    torch.manual_seed(0)
    mixed, targets = BatchMix(K, mode="mixup", alpha=1.0)(x, y)
    lam = shares(targets, y)
    assert targets.shape == (16, K) and torch.allclose(targets.sum(1), torch.ones(16))
    assert torch.allclose(targets[torch.arange(16), y.roll(1)], 1 - lam)
    assert torch.allclose(lam, lam[0].expand(16)), "one share per batch"
    assert torch.allclose(mixed, lam[0] * x + (1 - lam[0]) * x.roll(1, 0), atol=1e-6)


def test_cutmix_pastes_a_box_whose_area_is_the_label_share(batch):
    x, y = batch
    torch.manual_seed(3)
    mixed, targets = BatchMix(K, mode="cutmix", alpha=1.0)(x, y)
    pasted = (mixed == x.roll(1, 0)) & (mixed != x)  # pixels taken from the neighbour
    box = pasted.all(dim=1)[0]  # (32, 32): the same box in every image
    assert box.any(), "this seed draws a box"
    assert torch.equal(pasted.all(dim=1), box.expand(16, 32, 32))
    assert torch.equal(mixed[:, :, ~box], x[:, :, ~box])
    assert torch.allclose(shares(targets, y), 1 - box.float().mean())


def test_prob_mode_both_and_switch_prob(batch):
    x, y = batch
    assert BatchMix(K, prob=0.0)(x, y) == (x, y)  # never mixed: the batch as it came
    assert build_mix({"mode": "none"}, K) is None
    spec = {"_target_": "cifar_lightning.training.mixing.BatchMix", "mode": "both"}
    always_cutmix = build_mix({**spec, "switch_prob": 1.0}, K)
    always_mixup = build_mix({**spec, "switch_prob": 0.0}, K)
    torch.manual_seed(1)
    cut, _ = always_cutmix(x, y)
    assert ((cut == x) | (cut == x.roll(1, 0))).all(), "cutmix copies pixels"
    blend, _ = always_mixup(x, y)
    assert not ((blend == x) | (blend == x.roll(1, 0))).all(), "mixup blends them"
    with pytest.raises(TypeError, match="not a BatchMix"):
        build_mix({**spec, "_target_": "os.system"}, K)


def test_soft_targets_and_label_smoothing_combine_like_mixed_smoothed_labels(batch):
    """CE(logits, λ·onehot(a) + (1-λ)·onehot(b)) with smoothing ε equals the λ-weighted CE of
    the two smoothed labels: mixing commutes with smoothing (timm mixes smoothed labels)."""
    x, y = batch
    torch.manual_seed(2)
    _, targets = BatchMix(K, mode="mixup", alpha=1.0)(x, y)
    lam = shares(targets, y)[0]
    logits = torch.randn(16, K)
    loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    expected = lam * loss(logits, y) + (1 - lam) * loss(logits, y.roll(1))
    assert torch.allclose(loss(logits, targets), expected, atol=1e-6)
    smoothed = targets * 0.9 + 0.1 / K  # what timm's mixed, smoothed target is
    by_hand = -(smoothed * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(loss(logits, targets), by_hand)
    assert torch.equal(dominant_label(targets), torch.where(lam >= 0.5, y, y.roll(1)))
    assert torch.equal(dominant_label(y), y)


def test_curves_say_train_accuracy_is_against_the_dominant_label(tmp_path):
    from types import SimpleNamespace

    from cifar_lightning.training.callbacks.run_pictures import TrainingCurves

    curves = TrainingCurves(tmp_path)
    curves.history["train/acc"] = [(1, 0.3)]
    mixed = "train (dominant label of the mixed images)"
    for mix, label in ((BatchMix(K), mixed), (None, "train")):
        (_, accuracy) = curves._figure(SimpleNamespace(mix=mix)).axes
        assert [t.get_text() for t in accuracy.get_legend().get_texts()] == [label]


def recomputed_test_loss(ckpt: Path, cfg) -> float:
    """The test loss of ``ckpt``'s weights as evaluate loads them (the checkpoint's state_dict)."""
    model, _ = load_classifier(ckpt)
    dm = build(cfg.data, "data", loader="classic", num_workers=0, batch_size=1000)
    dm.setup("test")
    (x, y), *rest = list(dm.test_dataloader())
    assert not rest
    with torch.no_grad():
        return float(model.criterion(model(x), y))


# Two epochs of 3 steps: long enough for the EMA to differ from the raw weights. Without the
# pictures, which take most of a run this short on a CPU (they are tested elsewhere).
SHORT = [
    "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
    "model=simple_cnn", "data.batch_size=16", "data.fake_test_size=32", "data.val_size=32",
    "~callbacks.evaluation_figures", "~callbacks.aug_preview", "~callbacks.training_curves",
    "trainer.num_sanity_val_steps=0",
]  # fmt: skip


SWITCHES = {
    # classic loader (named: on a GPU auto would take the policy's batched form), a policy
    # aug, both mixes, the best checkpoint tested
    "classic": ["data.loader=classic", "aug=trivialaugment", "aug.erasing=0.5", "mix.mode=both",
                "test.ckpt=best"],
    # device loader: mixed on the device; label smoothing on the soft targets; the last weights
    "device": ["data.loader=device", "aug=seed004", "mix.mode=cutmix", "loss.label_smoothing=0.1",
               "test.ckpt=last"],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("loader", SWITCHES)
def test_ema_and_mixing_train_and_test_the_ema_weights(make_cfg, loader):
    cfg = make_cfg(*SHORT, "ema.enabled=true", *SWITCHES[loader])
    results = train(cfg)
    assert results["status"] == "completed" and results["global_step"] == 6
    mode = cfg.mix.mode
    assert results["mix"] == {
        "mode": mode, "alpha": 1.0, "prob": 1.0, "switch_prob": 0.5,
        "train_acc": "against each mixed image's dominant label",
    }  # fmt: skip
    assert results["ema"]["updates"] == 6 and results["ema"]["decay"] == 0.999
    assert "EMA weights" in results["ema"]["weights"]
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["ema"]
    tested = Path(results["best_checkpoint"]) if cfg.test.ckpt == "best" else None
    tested = tested or Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    for path in {tested, last}:  # last.ckpt: last written when fit ends, after the swap
        checkpoint = torch.load(path, weights_only=True)
        ema, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
        assert ema.keys() == raw.keys()
        weights = [k for k in ema if k.startswith("net.")]
        assert any(not torch.equal(ema[k], raw[k]) for k in weights), f"{path.name}: EMA = raw"
    # The test (and evaluate, which loads the checkpoint's state_dict) measured the EMA weights.
    assert results["metrics"]["test/loss"] == pytest.approx(recomputed_test_loss(tested, cfg))
