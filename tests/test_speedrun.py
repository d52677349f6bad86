"""The speedrun recipe's pieces: whitening init, Lookahead, test-time augmentation."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cifar_lightning.models.airbench_net import BiasOnlyBatchNorm, patch_whitening_filters
from cifar_lightning.training.architectures import AirbenchClassifier
from cifar_lightning.training.callbacks.lookahead import Lookahead, lookahead_decay
from cifar_lightning.training.tta import tta_logits


def airbench(widths, **kwargs) -> AirbenchClassifier:
    net = {"_target_": "cifar_lightning.models.airbench_net.AirbenchNet", "widths": widths}
    return AirbenchClassifier(net=net, **kwargs)


# --- whitening ------------------------------------------------------------------------------


def direct_patch_eigensystem(images: np.ndarray, k: int):
    """Every k x k patch as a (C*k*k) vector in (channel, row, col) order, by plain loops."""
    n, _, h, w = images.shape
    vectors = [
        images[i, :, y : y + k, x : x + k].reshape(-1)
        for i in range(n)
        for y in range(h - k + 1)
        for x in range(w - k + 1)
    ]
    patches = np.stack(vectors).astype(np.float64)
    second_moment = patches.T @ patches / len(patches)
    values, vectors = np.linalg.eigh(second_moment)
    return values[::-1], vectors[:, ::-1].T, patches  # strongest first


def test_whitening_filters_are_the_scaled_patch_eigenvectors():
    rng = np.random.default_rng(0)
    # Correlated channels, so the eigenvalues are well separated.
    base = rng.normal(size=(12, 1, 9, 9))
    images = np.concatenate(
        [base, 0.5 * base + rng.normal(size=base.shape), rng.normal(size=base.shape) * 0.3], axis=1
    )
    eps = 5e-4
    filters = patch_whitening_filters(torch.tensor(images), kernel=2, eps=eps).numpy()
    values, vectors, patches = direct_patch_eigensystem(images, 2)
    assert filters.shape == (24, 3, 2, 2)
    positive, negative = filters[:12].reshape(12, -1), filters[12:].reshape(12, -1)
    np.testing.assert_allclose(negative, -positive)
    for i in range(12):
        expected = vectors[i] / np.sqrt(values[i] + eps)
        sign = np.sign(expected @ positive[i])  # eigenvectors are defined up to sign
        np.testing.assert_allclose(positive[i], sign * expected, rtol=1e-6, atol=1e-9)
    # What it buys: the filters' responses over the data are decorrelated, unit variance.
    responses = patches @ positive.T
    moment = responses.T @ responses / len(responses)
    np.testing.assert_allclose(moment, np.diag(values / (values + eps)), atol=1e-6)


def test_net_whitens_from_the_datamodule_sample_and_keeps_it_frozen():
    model = airbench((8, 16, 16), whiten_images=50)
    images = torch.randn(50, 3, 32, 32)
    model.net.init_whitening(images)
    expected = patch_whitening_filters(images, 2, 5e-4)
    torch.testing.assert_close(model.net.whiten.weight, expected)
    assert not model.net.whiten.weight.requires_grad
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_convs_start_as_identity_and_batchnorm_scales_are_frozen():
    model = airbench((32, 64, 64))
    first_conv = model.net.body[1][0]
    w = first_conv.weight  # (32, 24, 3, 3): the first 24 filters pass their channel through
    assert torch.equal(w[:24, :, 1, 1], torch.eye(24))
    assert w[:24].abs().sum() == 24
    bns = [m for m in model.modules() if isinstance(m, BiasOnlyBatchNorm)]
    assert bns and all(not m.weight.requires_grad and m.bias.requires_grad for m in bns)


def test_batchnorm_biases_get_the_scaled_learning_rate():
    model = airbench(
        (8, 16, 16),
        bias_lr_scale=64.0,
        optimizer={
            "_target_": "torch.optim.SGD",
            "_partial_": True,
            "lr": 0.01,
            "weight_decay": 0.5,
            "momentum": 0.85,
            "nesterov": True,
        },
    )
    optimizer = model.configure_optimizers()
    rest, biases, whiten = optimizer.param_groups
    assert rest["lr"] == 0.01 and rest["weight_decay"] == 0.5
    assert biases["lr"] == pytest.approx(0.64) and biases["weight_decay"] == pytest.approx(0.5 / 64)
    # lr x weight_decay (the per-step decay) is the same for both groups.
    assert rest["lr"] * rest["weight_decay"] == pytest.approx(biases["lr"] * biases["weight_decay"])
    assert len(biases["params"]) == 6
    assert whiten["params"] == [model.net.whiten.bias] and whiten["lr"] == 0.01


def test_param_groups_survive_the_sync_batchnorm_conversion():
    """Lightning converts BatchNorm to SyncBatchNorm (trainer.sync_batchnorm) before it asks
    for the optimizer: the groups must not depend on the module type."""
    model = airbench((8, 16, 16))
    before = [len(g["params"]) for g in model.param_groups()]
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert not any(isinstance(m, BiasOnlyBatchNorm) for m in model.modules())
    assert [len(g["params"]) for g in model.param_groups()] == before == [7, 6, 1]


class _TinyData(L.LightningDataModule):
    def sample_train_images(self, n: int) -> torch.Tensor:
        return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % 10)
        return DataLoader(data, batch_size=8)


class _BiasRecorder(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (whitening, a norm) biases

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        whiten, norm = pl_module.net.whiten.bias, pl_module.net.body[1].norm1.bias
        self.seen.append((whiten.detach().clone(), norm.detach().clone()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        assert pl_module.net.whiten.bias.requires_grad  # DDP and compiled graphs rely on it


def test_whitening_bias_trains_then_freezes_with_requires_grad_untouched():
    model = airbench(
        (8, 16, 16),
        whiten_images=20,
        whiten_bias_epochs=1,
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "weight_decay": 1},
        scheduler={
            "scheduler": {
                "_target_": "cifar_lightning.training.schedules.warmup_warmdown",
                "_partial_": True,
            },
            "interval": "step",
        },
    )
    recorder = _BiasRecorder()
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
    )  # fmt: skip
    trainer.fit(model, datamodule=_TinyData())
    (w0, _), (w1, n1), (w2, n2) = recorder.seen
    whiten_end, norm_end = model.net.whiten.bias.detach(), model.net.body[1].norm1.bias.detach()
    assert not torch.equal(w0, w1)  # epoch 0 trained it (and its weight decay)
    assert torch.equal(w1, w2) and torch.equal(w2, whiten_end)  # frozen from epoch 1 on
    assert not torch.equal(n1, n2) and not torch.equal(n2, norm_end)  # the rest still learns


# --- Lookahead ------------------------------------------------------------------------------


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.register_buffer("count", torch.tensor(0))  # integer state: never averaged


class _Module:
    def __init__(self):
        self.net = _Net()


class _Trainer:
    def __init__(self, total):
        self.global_step = 0
        self.estimated_stepping_batches = total


def test_lookahead_matches_the_reference_formula():
    every, base, total = 5, 0.95, 20
    module, trainer, callback = _Module(), _Trainer(total), Lookahead(every=every, base=base)
    callback.on_train_start(trainer, module)
    slow = torch.zeros(3)
    rng = torch.Generator().manual_seed(0)
    for step in range(1, total + 1):
        fast = module.net.w.detach()
        fast += torch.randn(3, generator=rng)  # an "optimizer step"
        trainer.global_step = step
        expected_fast = fast.clone()
        if step % every == 0 or step == total:
            decay = 1.0 if step == total else base**every * (step / total) ** 3
            slow = slow + (1 - decay) * (fast - slow)
            expected_fast = slow.clone()
        callback.on_train_batch_end(trainer, module)
        torch.testing.assert_close(module.net.w.detach(), expected_fast)
    assert module.net.count.item() == 0
    assert lookahead_decay(10, 20, 5, 0.95) == pytest.approx(0.95**5 / 8)


def test_lookahead_state_survives_a_checkpoint():
    module, trainer, callback = _Module(), _Trainer(10), Lookahead()
    callback.on_train_start(trainer, module)
    restored = Lookahead()
    restored.load_state_dict(callback.state_dict())
    restored.on_train_start(trainer, module)
    assert torch.equal(restored.slow["w"], callback.slow["w"])


# --- test-time augmentation -----------------------------------------------------------------


def test_tta_averages_the_views():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(tta_logits(net, x, "none"), net(x))
    mirrored = 0.5 * (net(x) + net(x.flip(-1)))
    torch.testing.assert_close(tta_logits(net, x, "flip"), mirrored)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [
        x,
        x.flip(-1),
        padded[..., :8, :8],
        padded[..., :8, :8].flip(-1),
        padded[..., 2:, 2:],
        padded[..., 2:, 2:].flip(-1),
    ]
    weights = [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    expected = sum(w * net(v) for w, v in zip(weights, views, strict=True))
    torch.testing.assert_close(tta_logits(net, x, "flip_translate"), expected)


@pytest.mark.parametrize("mode, views", [("none", 1), ("flip", 2), ("flip_translate", 6)])
def test_tta_sends_every_view_through_one_forward(mode, views):
    """Two calls of a net compiled with CUDA graphs overwrite each other's outputs."""
    calls = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    net.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    assert tta_logits(net, torch.randn(5, 3, 8, 8), mode).shape == (5, 4)
    assert calls == [5 * views]


def test_tta_on_a_flip_invariant_net_changes_nothing():
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(tta_logits(net, x, "flip"), net(x))


# --- alternating flip, schedule, the recipe ---------------------------------------------------


def _asymmetric_images(n: int) -> torch.Tensor:
    """(n, 3, 8, 8) uint8 images, each different and none equal to its own mirror."""
    base = torch.arange(8, dtype=torch.uint8).view(1, 1, 1, 8) * 20  # a left-right ramp
    return (base + torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)).expand(n, 3, 8, 8)


def test_alternating_flip_flips_each_image_on_alternate_epochs():
    from cifar_lightning.data.batched_aug import AlternatingFlip, Compose, Normalize
    from cifar_lightning.data.device_loader import DeviceLoader, ShardSampler

    n = 64
    images = _asymmetric_images(n).contiguous()
    loader = DeviceLoader(
        images,
        torch.arange(n),
        None,
        batch_size=16,
        sampler=ShardSampler(n, shuffle=True, seed=3),
        normalize=Normalize([0.0] * 3, [1 / 255] * 3),  # x -> x: read pixels back
        augment=Compose([AlternatingFlip()]),
        seed=7,
    )

    def mirrored(epoch: int) -> dict[int, bool]:
        loader.sampler.set_epoch(epoch)
        seen = {}
        for x, y in loader:
            for image, label in zip(x, y, strict=True):
                original = images[label].float()
                assert torch.equal(image, original) or torch.equal(image, original.flip(-1))
                seen[int(label)] = torch.equal(image, original.flip(-1))
        assert sorted(seen) == list(range(n))  # every image, once
        return seen

    e0, e1, e2, e3 = (mirrored(e) for e in range(4))
    assert all(e0[i] != e1[i] for i in range(n)), "each image flips from one epoch to the next"
    assert e0 == e2 and e1 == e3
    assert 16 <= sum(e0.values()) <= 48  # about half start mirrored


def test_alternating_flip_needs_the_device_loader():
    from cifar_lightning.data.batched_aug import AlternatingFlip, Compose

    with pytest.raises(ValueError, match="needs the batch's position"):
        Compose([AlternatingFlip()])(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.Generator())


def test_warmup_warmdown_schedule():
    from cifar_lightning.training.schedules import WarmupWarmdown

    f = WarmupWarmdown(total_steps=100, warmup=0.23, start=0.2, end=0.07)
    assert f(0) == pytest.approx(0.2)
    assert f(23) == pytest.approx(1.0)
    assert f(100) == pytest.approx(0.07)
    assert f(11) == pytest.approx(0.2 + 0.8 * 11 / 23)
    assert f(60) == pytest.approx(1.0 - 0.93 * (60 - 23) / 77)


def test_speedrun_recipe_is_airbench94s():
    from cifar_lightning.run.config import compose_config

    cfg = compose_config(["experiment=speedrun"])
    assert cfg.model._target_.endswith("AirbenchClassifier")
    assert list(cfg.model.net.widths) == [64, 256, 256] and cfg.model.bias_lr_scale == 64
    assert cfg.data.loader == "device" and cfg.data.batch_size == 1024 and cfg.data.drop_last
    assert cfg.optim.nesterov and cfg.optim.momentum == 0.85
    # 11.5 per 1024 examples in airbench's decoupled form, for a mean-reduced loss:
    assert cfg.optim.lr == pytest.approx(11.5 / (1 + 1 / (1 - 0.85)))
    assert cfg.optim.lr * cfg.optim.weight_decay == pytest.approx(0.0153 / (1 + 1 / (1 - 0.85)))
    assert cfg.loss.label_smoothing == 0.2 and cfg.test.tta == "flip_translate"
    assert cfg.trainer.max_steps == 476  # 9.9 epochs x 48 full batches
    assert cfg.callbacks.lookahead.every == 5 and cfg.timing.enabled
    assert [op._target_.rsplit(".", 1)[1] for op in cfg.aug.batched.ops] == [
        "AlternatingFlip",
        "RandomCrop",
    ]


@pytest.mark.slow
def test_speedrun_trains_end_to_end_on_a_subset(make_cfg):
    from cifar_lightning.run.train import train

    cfg = make_cfg(
        "experiment=speedrun",
        "data.fake_train_size=512",
        "data.batch_size=128",
        "model.whiten_images=256",
        "trainer.max_steps=12",
        "timing.warmup_steps=2",
        "data.val_size=0",
        "trainer.limit_val_batches=1",
        "trainer.max_epochs=3",
    )
    results = train(cfg)
    assert results["status"] == "completed" and results["global_step"] == 12
    timing = results["timing"]
    assert timing["clock"] == "time.perf_counter"
    assert timing["train_s"] > 0 and timing["test_s"] > 0 and timing["warmup_s"] > 0
    assert timing["total_s"] == pytest.approx(
        timing["setup_s"] + timing["train_s"] + timing["test_s"], abs=1e-3
    )
    assert timing["cold_start_s"] > timing["total_s"]


@pytest.mark.slow
def test_timed_run_compiles_nothing_inside_its_timed_segments(make_cfg, monkeypatch):
    """The warm-up meets every shape (the last train, val and test batches are smaller) and
    the bias freeze changes no graph; setup_s leaves other callbacks' on_fit_start out."""
    from cifar_lightning.run.train import train
    from conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    cfg = make_cfg(
        "experiment=speedrun",
        "model.net.widths=[8,16,16]",
        "model.whiten_images=256",
        "model.whiten_bias_epochs=1",
        "data.fake_train_size=600",  # 4 batches of 128 and one of 88
        "data.fake_test_size=200",  # 128 and 72, with TTA 6x that
        "data.batch_size=128",
        "data.drop_last=false",
        "trainer.max_steps=10",
        "trainer.max_epochs=2",
        "timing.warmup_steps=2",
        "speed.compile={backend:eager}",  # dynamo's graphs, without inductor's compile time
        "+callbacks.slow._target_=probes.SlowFitStart",
    )
    timing = train(cfg)["timing"]
    assert timing["recompiles"] == 0 and timing["valid"], timing
    assert timing["setup_s"] < 0.5, timing


def test_cold_start_counts_a_later_multirun_job_from_its_own_start(monkeypatch):
    """Runs 2..N of one process (Hydra's basic launcher) once counted all the runs before."""
    import time

    from cifar_lightning.run import timing

    monkeypatch.setattr(timing, "_first_run_in_process", True)
    first = timing.cold_start_s(time.perf_counter())
    assert first == pytest.approx(timing.seconds_since_start(), abs=0.05)  # from process start
    assert timing.cold_start_s(time.perf_counter() - 2.0) == pytest.approx(2.0, abs=0.05)


# --- the airbench comparison harness (GPU-only to run; its pieces checked here) ---------------


def test_data_export_in_airbench_format(tmp_path):
    from cifar_lightning.data.sources import make_fake
    from cifar_lightning.tools.airbench_compare import export_for_airbench

    splits = make_fake(20, 10, classes=[str(i) for i in range(10)], seed=0)
    export_for_airbench(splits, tmp_path)
    train = torch.load(tmp_path / "train.pt", weights_only=True)
    assert train["images"].dtype == torch.uint8 and train["images"].shape == (20, 32, 32, 3)
    assert torch.equal(train["labels"], torch.from_numpy(splits.train.labels))
    assert len(torch.load(tmp_path / "test.pt", weights_only=True)["labels"]) == 10


def test_airbench_output_is_parsed():
    from cifar_lightning.tools.airbench_compare import parse_airbench

    # airbench94's table (its column widths, trimmed here to fit the line length).
    out = "\n".join(
        [
            "|  run  |  epoch  | train_loss |  train_acc  |  val_acc  |  tta_val_acc  |  total  |",
            "|    0  |      0  |    1.1510  |     0.5488  |   0.4730  |               |  0.642  |",
            "|       |   eval  |    0.2812  |     0.9844  |   0.9368  |       0.9402  |  3.8401 |",
            "|    1  |      0  |    1.1554  |     0.5410  |   0.4813  |               |  0.6417 |",
            "|       |   eval  |    0.2759  |     0.9824  |   0.9373  |       0.9398  |  3.839  |",
            "Mean: 0.9400    Std: 0.0003",
        ]
    )
    assert parse_airbench(out) == [
        {"acc": 0.9402, "time_s": 3.8401},
        {"acc": 0.9398, "time_s": 3.8390},
    ]
