"""data.loader=device: each image once an epoch, seeded shuffles, shards, classic's batches."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from torchvision.transforms import v2

from cifar_lightning.data import CIFAR10DataModule
from cifar_lightning.data import batched_aug as B
from cifar_lightning.data.device_loader import ShardSampler
from cifar_lightning.errors import ConfigError
from cifar_lightning.run.train import train
from conftest import run_cli

# 300 training images at batch 32: 9 full batches and one of 12.
SIZES = dict(source="fake", fake_train_size=350, fake_test_size=70, val_size=50, batch_size=32)


def datamodule(loader: str, aug=None, batched=None, seed: int = 0) -> CIFAR10DataModule:
    dm = CIFAR10DataModule(
        **SIZES,
        num_workers=0,
        aug=aug if aug is not None else v2.Identity(),
        loader=loader,
        batched_aug=batched if batched is not None else B.Compose([]),
        shuffle_seed=seed,
    )
    dm.setup("fit")
    return dm


def as_uint8(batch: torch.Tensor, dm: CIFAR10DataModule) -> torch.Tensor:
    """Undo the normalization: the loader's float images back to the source's uint8 pixels."""
    mean = torch.tensor(dm.mean).view(1, 3, 1, 1)
    std = torch.tensor(dm.std).view(1, 3, 1, 1)
    return ((batch * std + mean) * 255).round().to(torch.uint8)


def fingerprints(images: torch.Tensor) -> list[bytes]:
    return [image.contiguous().numpy().tobytes() for image in images]


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize(("n", "replicas"), [(10, 1), (10, 3), (7, 4), (2, 3)])
def test_epoch_sampler_is_distributed_samplers_order(n, replicas, shuffle, drop_last):
    for rank in range(replicas):
        for epoch in (0, 3):
            ours = ShardSampler(n, replicas, rank, shuffle=shuffle, seed=5, drop_last=drop_last)
            ref = DistributedSampler(
                range(n), replicas, rank, shuffle=shuffle, seed=5, drop_last=drop_last
            )
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert ours.indices().tolist() == list(ref)


def test_every_training_image_exactly_once_per_epoch():
    dm = datamodule("device")
    loader = dm.train_dataloader()
    train_set = dm.train_set
    source = torch.from_numpy(train_set.images[train_set.indices]).permute(0, 3, 1, 2)
    labels = train_set.labels[train_set.indices].tolist()
    expected = Counter(zip(fingerprints(source), labels, strict=True))
    assert len(expected) == 300  # fake images are all distinct
    assert len(loader) == 10
    orders = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
        seen, sizes = Counter(), []
        for images, labels in loader:
            sizes.append(len(labels))
            seen.update(zip(fingerprints(as_uint8(images, dm)), labels.tolist(), strict=True))
        assert seen == expected  # every image once, with its own label
        assert sizes == [32] * 9 + [12]  # the last, partial batch is kept
        orders.append(loader.epoch_indices().tolist())
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])


def test_shuffle_and_augmentation_repeat_with_the_seed():
    aug = B.Compose([B.RandomCrop(4), B.HorizontalFlip()])

    def first_batch(seed: int, epoch: int) -> torch.Tensor:
        loader = datamodule("device", batched=aug, seed=seed).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))[0]

    assert torch.equal(first_batch(1, 0), first_batch(1, 0))
    assert not torch.equal(first_batch(1, 0), first_batch(1, 1))
    assert not torch.equal(first_batch(1, 0), first_batch(2, 0))


def test_resumes_mid_epoch_with_the_same_batches_and_augmentation():
    """What a checkpoint saves (the loader's state) restarts the epoch where it stopped."""
    aug = B.Compose([B.RandomCrop(padding=4), B.HorizontalFlip(), B.Cutout(size=8, p=0.5)])

    def epoch_batches(loader, epoch):
        loader.sampler.set_epoch(epoch)
        return [x for x, _ in loader]

    reference = datamodule("device", batched=aug, seed=3).train_dataloader()
    expected = epoch_batches(reference, 1)

    first = datamodule("device", batched=aug, seed=3).train_dataloader()
    first.sampler.set_epoch(1)
    stream = iter(first)
    for _ in range(4):  # train four batches, then "crash"
        next(stream)
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 4}

    resumed = datamodule("device", batched=aug, seed=3).train_dataloader()
    resumed.load_state_dict(state)
    rest = epoch_batches(resumed, 1)
    assert len(rest) == len(expected) - 4
    assert all(torch.equal(a, b) for a, b in zip(rest, expected[4:], strict=True))
    # The position applies once: the next epoch is a whole one again.
    assert len(epoch_batches(resumed, 2)) == len(expected)


def test_ddp_ranks_get_disjoint_shards_of_equal_length():
    shards = []
    for rank in range(3):
        sampler = ShardSampler(300, num_replicas=3, rank=rank, shuffle=True, seed=0, drop_last=True)
        sampler.set_epoch(2)
        shards.append(set(sampler.indices().tolist()))
    assert all(len(s) == 100 for s in shards)
    assert not (shards[0] & shards[1]) and not (shards[1] & shards[2])
    assert set.union(*shards) == set(range(300))


def test_without_augmentation_both_loaders_give_the_same_batches():
    classic, device = datamodule("classic"), datamodule("device")
    for stage in ("val_dataloader", "test_dataloader"):
        a, b = list(getattr(classic, stage)()), list(getattr(device, stage)())
        assert len(a) == len(b)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Training: the classic loader over the device loader's order for the epoch.
    loader = device.train_dataloader()
    loader.sampler.set_epoch(1)
    order = loader.sampler.indices().tolist()
    same_order = DataLoader(classic.train_set, batch_sampler=BatchSampler(order, 32, False))
    for (xa, ya), (xb, yb) in zip(same_order, loader, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_device_loader_without_batched_aug_is_a_config_error():
    dm = CIFAR10DataModule(**SIZES, num_workers=0, aug=v2.Identity(), loader="device")
    dm.setup("fit")
    with pytest.raises(ConfigError, match="needs the augmentation as batched ops"):
        dm.train_dataloader()


@pytest.mark.slow
def test_train_with_the_device_loader(make_cfg):
    results = train(make_cfg("data.loader=device", "data.fake_train_size=300"))
    assert results["status"] == "completed"
    # 300 - 64 = 236 training images at batch 32: 7 full batches and one of 12, all trained on.
    assert results["global_step"] == 8
    assert "test/acc" in results["metrics"] and "train/loss_epoch" in results["metrics"]


@pytest.mark.slow
def test_cli_aug_without_a_batched_form_is_one_clear_error(tmp_path):
    extra = tmp_path / "extra_conf"
    (extra / "aug").mkdir(parents=True)
    (extra / "aug" / "rotate.yaml").write_text(
        "pipeline:\n  _target_: torchvision.transforms.v2.RandomRotation\n  degrees: 15\n"
    )
    proc = run_cli(
        "cifar_lightning.train",
        "data=fake",
        "aug=rotate",
        "data.loader=device",
        f"hydra.searchpath=[file://{extra}]",
        f"paths.output_root={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: aug=rotate has no batched form" in proc.stderr
    assert "data.loader=device cannot run it" in proc.stderr
    assert "aug=crop_flip" in proc.stderr and "aug=none" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "out").rglob("metrics.json"))
