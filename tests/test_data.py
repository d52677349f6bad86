"""The DataModule: sources, the seeded split, transforms, loaders, and the decode cache."""

from __future__ import annotations

import os
import re
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from cifar_lightning.data import CIFAR10DataModule
from cifar_lightning.data import imagefolder as imagefolder_module
from cifar_lightning.data.datamodule import default_num_workers, eval_transform
from cifar_lightning.data.imagefolder import decode, load_imagefolder
from cifar_lightning.errors import ConfigError, DataError
from cifar_lightning.run.checks import check
from conftest import CLASSES, run_cli, tar_folder, write_image_folder


def fake_dm(**kwargs) -> CIFAR10DataModule:
    defaults = dict(
        source="fake",
        fake_train_size=300,
        fake_test_size=50,
        val_size=60,
        batch_size=16,
        num_workers=0,
    )
    dm = CIFAR10DataModule(**{**defaults, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm


# --- splits -------------------------------------------------------------------------------


def test_split_sizes_and_shapes():
    dm = fake_dm()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (240, 60, 50)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.min() >= 0 and y.max() < 10


def test_split_is_seeded_and_disjoint():
    a, b, c = fake_dm(split_seed=1), fake_dm(split_seed=1), fake_dm(split_seed=2)
    assert np.array_equal(a.val_set.indices, b.val_set.indices)
    assert not np.array_equal(a.val_set.indices, c.val_set.indices)
    assert not set(a.val_set.indices) & set(a.train_set.indices)
    assert set(a.val_set.indices) | set(a.train_set.indices) == set(range(300))


def test_val_size_zero_validates_on_the_test_set():
    dm = fake_dm(val_size=0)
    assert dm.val_set is dm.test_set and len(dm.train_set) == 300


def test_validation_never_sees_training_augmentation():
    # An augmentation that changes every image, every time.
    heavy = v2.Compose([v2.RandomErasing(p=1.0, value=0), v2.RandomHorizontalFlip(p=1.0)])
    dm = fake_dm(aug=heavy)
    plain = eval_transform(dm.mean, dm.std)
    raw = dm.load().train
    for ds in (dm.val_set, dm.test_set):
        x0, _ = ds[0]
        assert torch.equal(x0, ds[0][0]), "evaluation must be deterministic"
    j = dm.val_set.indices[0]
    expected = plain(torch.from_numpy(raw.images[j]).permute(2, 0, 1))
    assert torch.equal(dm.val_set[0][0], expected)
    # ... while the training split really is augmented.
    k = dm.train_set.indices[0]
    unaugmented = plain(torch.from_numpy(raw.images[k]).permute(2, 0, 1))
    assert not torch.equal(dm.train_set[0][0], unaugmented)


def test_normalization_comes_from_config():
    dm = fake_dm(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), val_size=0)
    x = torch.stack([dm.test_set[i][0] for i in range(50)])
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.5


def test_loaders_drop_last_only_for_training_and_do_not_pin_on_cpu():
    dm = fake_dm(batch_size=64)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert train.drop_last and not val.drop_last
    assert len(train) == 240 // 64 and len(val) == 1
    assert not train.pin_memory


def test_default_workers_follow_the_cpu_count():
    dm = CIFAR10DataModule(source="fake")
    assert dm.num_workers == default_num_workers() == min(len(os.sched_getaffinity(0)), 8)


def test_workers_load_the_same_batches_as_the_main_process():
    a = fake_dm(num_workers=0, val_size=0)
    b = fake_dm(num_workers=2, val_size=0)
    xa, ya = next(iter(a.test_dataloader()))
    xb, yb = next(iter(b.test_dataloader()))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size=0 must be at least 1"),
        ("data.val_size=-1", "data.val_size=-1 must be 0 (validate on test) or more"),
        ("data.num_workers=-2", "data.num_workers=-2 must be 0 or more (or null)"),
        (
            "data.source=mnist",
            "data.source='mnist' must be one of cifar10, cifar100, imagefolder, fake",
        ),
        ("data.std=[0.5,0.0,0.5]", "data.std=[0.5, 0.0, 0.5] needs three values, each > 0"),
        ("data.loader=gpu", "data.loader='gpu' must be one of auto, classic, device"),
    ],
)
def test_bad_data_values_are_config_errors(make_cfg, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check(make_cfg(override))


def test_split_errors_name_the_fix():
    with pytest.raises(ConfigError, match=r"data\.val_size=300 leaves no training images"):
        fake_dm(val_size=300)
    with pytest.raises(ConfigError, match="larger than the training split"):
        fake_dm(val_size=290, batch_size=16)


def test_fake_data_is_learnable_signal_not_noise():
    data = fake_dm().load()
    means = np.stack([data.train.images[data.train.labels == k].mean(0) for k in range(10)])
    # Class-mean images differ far more than the noise on a mean of ~30 images would allow.
    assert np.abs(means[:, None] - means[None]).mean() > 20


# --- image folder ---------------------------------------------------------------------------


def test_folder_and_tarball_decode_to_the_same_arrays(tmp_path, image_folder):
    archive = tar_folder(image_folder, tmp_path / "copy.tar.gz", top="cifar")
    a = load_imagefolder(image_folder, CLASSES, tmp_path / "cache")
    b = load_imagefolder(archive, CLASSES, tmp_path / "cache")
    assert a.train.images.shape == (30, 32, 32, 3) and a.test.images.shape == (30, 32, 32, 3)
    assert np.array_equal(a.train.images, b.train.images)
    assert np.array_equal(a.train.labels, b.train.labels)
    assert list(a.train.labels[:6]) == [0, 0, 0, 1, 1, 1]  # class order = folder name order
    assert np.array_equal(a.test.images, b.test.images)
    assert np.array_equal(a.test.labels, b.test.labels)


def test_test_split_is_in_a_fixed_mixed_order(tmp_path, image_folder):
    """A prefix of the test set (limit_test_batches) must not be one class only."""
    a = load_imagefolder(image_folder, CLASSES, tmp_path / "cache")
    assert len(set(a.test.labels[:10].tolist())) >= 5
    assert sorted(a.test.labels.tolist()) == sorted(np.repeat(np.arange(10), 3).tolist())
    b = decode(image_folder, CLASSES)  # decoded again, no cache: the same order
    assert np.array_equal(a.test.labels, b.test.labels)
    assert np.array_equal(a.test.images, b.test.images)


def test_imagefolder_via_datamodule(tmp_path, image_folder):
    dm = CIFAR10DataModule(
        source="imagefolder",
        root=str(image_folder),
        val_size=6,
        batch_size=8,
        num_workers=0,
        cache_dir=str(tmp_path / "cache"),
    )
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 6, 30)


def test_cache_is_reused_while_the_source_is_unchanged(tmp_path, image_folder, monkeypatch):
    cache = tmp_path / "cache"
    first = load_imagefolder(image_folder, CLASSES, cache)
    calls = []
    real_decode = imagefolder_module.decode
    monkeypatch.setattr(imagefolder_module, "decode", lambda *a: calls.append(1) or real_decode(*a))
    again = load_imagefolder(image_folder, CLASSES, cache)
    assert calls == [] and np.array_equal(first.train.images, again.train.images)

    # Change one image: the cache no longer matches and is rebuilt; the stale one is removed.
    target = image_folder / "train" / "cat" / "0000.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    changed = load_imagefolder(image_folder, CLASSES, cache)
    assert calls == [1]
    cat0 = int(np.flatnonzero(changed.train.labels == 3)[0])
    assert changed.train.images[cat0].max() == 0
    assert len(list(cache.glob("*.npz"))) == 1


def test_corrupt_cache_is_rebuilt(tmp_path, image_folder):
    cache = tmp_path / "cache"
    load_imagefolder(image_folder, CLASSES, cache)
    (npz,) = cache.glob("*.npz")
    npz.write_bytes(b"not an npz")
    again = load_imagefolder(image_folder, CLASSES, cache)
    assert again.train.images.shape == (30, 32, 32, 3)


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        load_imagefolder(tmp_path / "nope", CLASSES, tmp_path / "cache")
    assert "data.root" in e.value.fix


def test_imagefolder_without_root_is_a_config_error(make_cfg):
    with pytest.raises(ConfigError, match=r"needs data\.root"):
        check(make_cfg("data=imagefolder"))


def test_class_mismatch_says_how_to_set_classes(tmp_path):
    folder = write_image_folder(tmp_path / "f", per_class=1, classes=["apple", "pear"])
    with pytest.raises(DataError) as e:
        load_imagefolder(folder, CLASSES, tmp_path / "cache")
    assert "data.classes=[apple,pear]" in e.value.fix


def test_wrong_size_and_corrupt_images_are_named(tmp_path):
    folder = write_image_folder(tmp_path / "f", per_class=1, classes=["a", "b"])
    big = folder / "train" / "a" / "big.png"
    write_image_folder(tmp_path / "g", per_class=1, classes=["a"], size=(40, 30))
    big.write_bytes((tmp_path / "g" / "train" / "a" / "0000.png").read_bytes())
    with pytest.raises(DataError, match=r"train/a/big.png is 40x30"):
        load_imagefolder(folder, ["a", "b"], tmp_path / "cache")
    big.unlink()
    (folder / "test" / "b" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(DataError, match=r"test/b/broken.jpg is not a readable image"):
        load_imagefolder(folder, ["a", "b"], tmp_path / "cache")


def test_truncated_tarball_is_a_data_error(tmp_path, image_folder):
    archive = tar_folder(image_folder, tmp_path / "copy.tar.gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or not a readable tar archive"):
        load_imagefolder(archive, CLASSES, tmp_path / "cache")


def test_tarball_missing_a_test_class(tmp_path):
    folder = write_image_folder(tmp_path / "f", per_class=1, classes=["a", "b"])
    archive = tmp_path / "x.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / "train", arcname="train")
        tar.add(folder / "test" / "a", arcname="test/a")
    with pytest.raises(DataError, match=r"only in train: \['b'\]"):
        load_imagefolder(archive, ["a", "b"], tmp_path / "cache")


def test_empty_class_folder(tmp_path):
    folder = write_image_folder(tmp_path / "f", per_class=1, classes=["a", "b"])
    for f in (folder / "train" / "b").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"train/b/ holds no images"):
        load_imagefolder(folder, ["a", "b"], tmp_path / "cache")


# --- torchvision download -------------------------------------------------------------------


def test_no_network_gives_one_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dm = CIFAR10DataModule(source="cifar10", root=str(tmp_path / "data"))
    with pytest.raises(DataError) as e:
        dm.prepare_data()
    assert "could not download CIFAR-10" in e.value.problem
    assert "data=imagefolder data.root=" in e.value.fix


@pytest.mark.slow
def test_no_network_from_the_command_line(tmp_path):
    # An unroutable proxy makes the download fail fast and offline-safe, network or not.
    dead_proxy = "http://127.0.0.1:9"
    proc = run_cli(
        "cifar_lightning.train",
        "data=cifar10",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.output_root={tmp_path / 'outputs'}",
        "trainer.enable_progress_bar=false",
        cwd=tmp_path,
        env={
            "http_proxy": dead_proxy,
            "https_proxy": dead_proxy,
            "HTTPS_PROXY": dead_proxy,
            "HTTP_PROXY": dead_proxy,
            "no_proxy": "",
            "NO_PROXY": "",
        },
    )
    assert proc.returncode == 1, proc.stderr
    assert "error: could not download CIFAR-10" in proc.stderr
    assert "data=imagefolder data.root=" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
