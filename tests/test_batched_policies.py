"""The batched auto-augment policies (cifar_lightning/data/batched_policies.py) and random
erasing are torchvision v2's: (a) with the op and magnitude fixed, every op gives each image
the pixels torchvision's own per-image code gives it; (b) over 10,000 draws, the ops,
magnitude bins and signs each image draws follow torchvision's transform's distribution.

Measured (CPU, 2026-12-03): (a) identical pixels for all 15 ops at every magnitude of the
three op spaces (TrivialAugmentWide's, RandAugment's at 31 bins, AutoAugment's at 10; 1,244
(op, signed magnitude) pairs), on smooth and on noise images — tolerance 0, max difference 0:
no interpolation differs (the geometric ops are nearest, on torchvision's own grid, and
AutoAugment's 0.2 shears, whose sampling points fall on pixel edges, land alike). (b) Two-
sample chi-square tests of our draws against torchvision's (rare cells pooled to at least 10
draws; the bar p > 1e-3): TrivialAugmentWide op p = 0.29, op × signed magnitude (589 dof)
p = 0.52, op × sign 0.45, op × magnitude 0.21; RandAugment step 1 / 2 p = 0.42 / 0.64, op
pairs (195 dof) 0.19; AutoAugment's applied op sequences cifar10 p = 0.39, svhn 0.27. Negative
magnitudes' share within 4 standard errors of torchvision's (measured +0.25, -1.29, +0.09,
-1.04 SE); a coin of 0.45 instead of 0.5 fails four of these tests. Random erasing: exact at
fixed parameters; height, width, top, left KS p > 1e-3; its rate within 4 standard errors.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF
from PIL import Image
from test_batched_recipes import FloatPeak

from cifar_lightning.data import CIFAR10DataModule
from cifar_lightning.data import batched_policies as P
from cifar_lightning.data.batched_aug import RandomErasing
from cifar_lightning.errors import ConfigError
from cifar_lightning.run.config import batched_aug_options, build, compose_config

stats = pytest.importorskip("scipy.stats")
DRAWS = 10_000
SPACES = {  # torchvision's class, its magnitude bins as the policies use them
    "TrivialAugmentWide": (v2.TrivialAugmentWide, 31),
    "RandAugment": (v2.RandAugment, 31),
    "AutoAugment": (v2.AutoAugment, 10),
}


def images(n: int, seed: int = 0) -> torch.Tensor:
    """Half smooth (upsampled 8x8 noise: edges, flat areas), half pixel noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n - n // 2, 3, 8, 8, generator=g) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear").byte()
    noise = torch.randint(0, 256, (n // 2, 3, 32, 32), generator=g, dtype=torch.uint8)
    return torch.cat((smooth, noise))[torch.randperm(n, generator=g)]


def torchvision_op(image: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """One image through torchvision's own op code, as its policies call it."""
    transform = v2.RandAugment()  # nearest, fill=None: black, as the policies default
    return transform._apply_image_or_video_transform(
        image, name, magnitude, interpolation=transform.interpolation, fill=transform._fill
    )


def every_op_and_magnitude() -> list[tuple[str, float]]:
    """Each (op, signed magnitude) any of the three policies can apply to a 32x32 image."""
    pairs = set()
    for space_of, bins in SPACES.values():
        for name, (values, signed) in space_of._AUGMENTATION_SPACE.items():
            made = values(bins, 32, 32)
            for m in [0.0] if made is None else [float(v) for v in made]:
                pairs |= {(name, m), (name, -m)} if signed else {(name, m)}
    pairs.add(("Invert", 0.0))
    return sorted(pairs)


def test_every_op_at_every_magnitude_is_torchvisions_pixel_for_pixel():
    pairs = every_op_and_magnitude()
    assert {name for name, _ in pairs} == set(P.OPS)  # all 15 ops
    x = images(2 * len(pairs))  # each pair on two images, all in one mixed batch
    op = torch.tensor([P.ID[name] for name, _ in pairs] * 2)
    magnitude = torch.tensor([m for _, m in pairs] * 2, dtype=torch.float64)
    ours = P.apply_ops(x, op, magnitude)
    for i, (name, m) in enumerate(pairs * 2):
        theirs = torchvision_op(x[i], name, m)
        assert torch.equal(ours[i], theirs), (name, m, int((ours[i].int() - theirs).abs().max()))


def test_the_device_path_computes_all_and_keeps_the_same_pixels(monkeypatch):
    """On a GPU each group runs on the whole batch and each image keeps its own op's result
    (no host sync); forced here on the CPU, it gives the CPU path's pixels."""
    x = images(256, seed=1)
    g = torch.Generator().manual_seed(3)
    op = torch.randint(len(P.OPS), (256,), generator=g)
    magnitude = (torch.rand(256, generator=g, dtype=torch.float64) * 2 - 1) * 0.9
    magnitude = torch.where(op == P.ID["Posterize"], torch.randint(1, 9, (256,), generator=g),
                            magnitude)  # fmt: skip
    by_index = P.apply_ops(x, op, magnitude)
    monkeypatch.setattr(P, "_index_on_host", lambda images: False)
    assert torch.equal(P.apply_ops(x, op, magnitude), by_index)
    assert torch.equal(x, images(256, seed=1))  # the input is left as it was


@pytest.mark.parametrize("name", list(SPACES))
def test_a_policy_applies_its_drawn_steps_as_torchvision_would(name):
    """The policy end to end: each image's drawn ops and magnitudes, replayed through
    torchvision's ops one image at a time, give the batch's pixels."""
    policy = {"TrivialAugmentWide": P.TrivialAugmentWide(), "RandAugment": P.RandAugment(2, 14),
              "AutoAugment": P.AutoAugment("svhn")}[name]  # fmt: skip
    x = images(192, seed=2)
    steps = policy.slots(len(x), torch.Generator().manual_seed(4), "cpu", (32, 32))
    ours = policy(x, torch.Generator().manual_seed(4))
    for i in range(len(x)):
        y = x[i]
        for op, magnitude in steps:
            y = torchvision_op(y, P.OPS[int(op[i])], float(magnitude[i]))
        assert torch.equal(ours[i], y), i


def recorded(transform, calls: int) -> list[tuple]:
    """torchvision's transform's own draws: per call, the (op, magnitude) pairs it applies."""
    seen: list[tuple] = []
    current: list = []

    def record(image, transform_id, magnitude, interpolation, fill):
        current.append((transform_id, round(magnitude, 6) + 0.0))
        return image

    transform._apply_image_or_video_transform = record
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    torch.manual_seed(0)
    for _ in range(calls):
        current = []
        transform(image)
        seen.append(tuple(current))
    return seen


def ours_drawn(policy, calls: int, keep_identity: bool = True) -> list[tuple]:
    """Our policy's draws in the same form (AutoAugment's ops that do not run are left out,
    as torchvision does not call them)."""
    steps = policy.slots(calls, torch.Generator().manual_seed(1), "cpu", (32, 32))
    rows = []
    for i in range(calls):
        row = [(P.OPS[int(op[i])], round(float(m[i]), 6) + 0.0) for op, m in steps]
        rows.append(tuple(r for r in row if keep_identity or r[0] != "Identity"))
    return rows


def same_categories(ours: list, theirs: list, what: str, least: int = 10) -> float:
    """Two-sample chi-square on category counts; categories rarer than ``least`` draws in
    both together are pooled into one."""
    a, b = Counter(ours), Counter(theirs)
    common = [k for k in a.keys() | b.keys() if a[k] + b[k] >= least]
    rare = [k for k in a.keys() | b.keys() if a[k] + b[k] < least]
    table = [[a[k] for k in common], [b[k] for k in common]]
    if rare:
        table[0].append(sum(a[k] for k in rare))
        table[1].append(sum(b[k] for k in rare))
    table = np.array(table)
    table = table[:, table.sum(0) > 0]
    result = stats.chi2_contingency(table)
    assert result.pvalue > 1e-3, f"{what}: chi2 {result.statistic:.1f}, p {result.pvalue:.2g}"
    print(f"{what}: chi2 {result.statistic:.1f}, dof {result.dof}, p {result.pvalue:.3f}")
    return result.pvalue


def test_trivial_augment_draws_torchvisions_ops_magnitudes_and_signs():
    ours = ours_drawn(P.TrivialAugmentWide(), DRAWS)
    theirs = recorded(v2.TrivialAugmentWide(), DRAWS)
    same_categories([r[0][0] for r in ours], [r[0][0] for r in theirs], "TA op")
    same_categories([r[0] for r in ours], [r[0] for r in theirs], "TA op x signed magnitude")
    # The margins, which a shift in one of them shows sooner than the 600-cell table does.
    same_categories([signs(r) for r in ours], [signs(r) for r in theirs], "TA op x sign")
    same_categories([(r[0][0], abs(r[0][1])) for r in ours],
                    [(r[0][0], abs(r[0][1])) for r in theirs], "TA op x magnitude")  # fmt: skip
    same_sign_rate(ours, theirs, "TA signs")
    assert {r[0][0] for r in ours} == set(v2.TrivialAugmentWide._AUGMENTATION_SPACE)


def signs(row: tuple) -> tuple:
    """A draw's ops, each with the sign of its magnitude (0: none to see)."""
    return tuple((name, int(np.sign(m))) for name, m in row)


def same_sign_rate(ours: list, theirs: list, what: str) -> None:
    """The share of negative magnitudes among all nonzero ones (every op's sign is the same
    coin), ours against torchvision's, within 4 standard errors of their difference."""
    a = [m < 0 for r in ours for _, m in r if m != 0]
    b = [m < 0 for r in theirs for _, m in r if m != 0]
    p = (sum(a) + sum(b)) / (len(a) + len(b))
    se = (p * (1 - p) * (1 / len(a) + 1 / len(b))) ** 0.5
    diff = np.mean(a) - np.mean(b)
    print(f"{what}: negative {np.mean(a):.4f} vs {np.mean(b):.4f}, {diff / se:+.2f} SE")
    assert abs(diff) <= 4 * se, f"{what}: {np.mean(a):.4f} vs {np.mean(b):.4f}"


def test_rand_augment_draws_torchvisions_ops_and_signs_per_step():
    ours = ours_drawn(P.RandAugment(2, 9), DRAWS)
    theirs = recorded(v2.RandAugment(2, 9), DRAWS)
    for k in range(2):
        same_categories([r[k] for r in ours], [r[k] for r in theirs], f"RA step {k}")
    same_categories([(r[0][0], r[1][0]) for r in ours], [(r[0][0], r[1][0]) for r in theirs],
                    "RA op pairs (the steps independent)")  # fmt: skip
    same_sign_rate(ours, theirs, "RA signs")
    magnitudes = {abs(m) for r in ours for name, m in r if name == "ShearX"}
    assert magnitudes == {round(float(torch.linspace(0, 0.3, 31)[9]), 6)}  # bin 9 of 31


@pytest.mark.parametrize("policy", ["cifar10", "svhn"])
def test_auto_augment_draws_torchvisions_sub_policies(policy):
    ours = ours_drawn(P.AutoAugment(policy), DRAWS, keep_identity=False)
    theirs = recorded(v2.AutoAugment(v2.AutoAugmentPolicy(policy)), DRAWS)
    same_categories(ours, theirs, f"AA {policy}: applied op sequences")
    same_categories([signs(r) for r in ours], [signs(r) for r in theirs], f"AA {policy} signs")
    same_sign_rate(ours, theirs, f"AA {policy} signs")
    same_categories([len(r) for r in ours], [len(r) for r in theirs], "AA ops per image")


def test_random_erasing_fixed_and_drawn():
    g = torch.Generator().manual_seed(6)
    op = RandomErasing(p=0.5, fill=[0.4914, 0.4822, 0.4465])
    x = images(64)
    p = op.sample(64, g, "cpu", (32, 32))
    out = op.erase(x, p)
    for i in range(64):
        t, left, h, w = (int(p[k][i]) for k in ("top", "left", "height", "width"))
        value = torch.tensor([125.0, 123.0, 114.0]).view(3, 1, 1)
        theirs = TF.erase(x[i], t, left, h, w, value) if p["apply"][i] else x[i]
        assert torch.equal(out[i], theirs), i
    drawn = op.sample(DRAWS, g, "cpu", (32, 32))
    tv = v2.RandomErasing(p=0.5, value=[125, 123, 114])
    torch.manual_seed(0)
    made = [tv.make_params([x[0]]) for _ in range(DRAWS)]
    erased = [m for m in made if m["v"] is not None]
    applied = drawn["apply"]
    for key, ours in (("h", "height"), ("w", "width"), ("i", "top"), ("j", "left")):
        result = stats.ks_2samp(drawn[ours][applied].numpy(), [m[key] for m in erased])
        assert result.pvalue > 1e-3, (key, result.statistic, result.pvalue)
    # The rate: p times the share of images with a try that fits (torchvision: made at all).
    ours_rate, fits = float(applied.float().mean()), len(erased) / DRAWS
    se = (0.25 / DRAWS) ** 0.5
    assert abs(ours_rate - 0.5 * fits) < 4 * se, (ours_rate, fits)
    assert RandomErasing(p=0.0)(x, g) is x  # aug.erasing=0: off


@pytest.mark.parametrize(
    "op",
    [P.TrivialAugmentWide(), P.RandAugment(2, 14), P.AutoAugment("cifar10"), RandomErasing(1.0)],
    ids=repr,
)
@pytest.mark.parametrize("path", ["cpu", "device"])
def test_no_policy_holds_more_than_one_extra_float_batch(op, path, monkeypatch):
    """The device loader's memory bound (batched_aug.in_slices), as for the seed recipes; on
    the device path every group runs on the whole batch, so that is where it binds. Measured
    (96 images): at most 0.36 batches on the CPU path; 0.97–1.00 on the device path."""
    if path == "device":
        monkeypatch.setattr(P, "_index_on_host", lambda images: False)
    x = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    with FloatPeak() as memory:
        op(x, torch.Generator().manual_seed(0))
    print(f"{op!r} {path}: {memory.peak / (x.numel() * 4):.3f} float32 batches")
    assert memory.peak / (x.numel() * 4) <= 1.01


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: P.RandAugment(2, 31), "magnitude=31 must be in 0..30"),
        (lambda: P.RandAugment(-1, 9), "num_ops=-1 must be 0 or more"),
        (lambda: P.AutoAugment("cifar100"), "policy='cifar100' must be one of"),
        (lambda: P.TrivialAugmentWide(1), "num_magnitude_bins=1 must be at least 2"),
        (lambda: RandomErasing(p=2), "p=2 must be in"),
        (lambda: RandomErasing(scale=(0.5, 0.1)), "scale=.* must be"),
    ],
)
def test_bad_policy_settings_are_config_errors(make, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        make()


@pytest.mark.parametrize("aug", ["autoaugment", "randaugment", "trivialaugment"])
def test_the_policy_augs_have_batched_forms_that_auto_takes_on_a_gpu(aug):
    cfg = compose_config([f"aug={aug}", "aug.erasing=0.25"])
    assert aug in batched_aug_options() and cfg.data.loader == "auto"
    batched = build(cfg.aug.batched, "aug")
    names = [type(op).__name__ for op in batched.ops]
    assert names[:2] == ["RandomCrop", "HorizontalFlip"] and names[3] == "RandomErasing"
    assert batched.ops[3].p == 0.25 and batched.ops[3].fill.pil() == (125, 123, 114)
    x = images(32)
    out = batched(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8 and not torch.equal(out, x)
    # The benchmark's per-image baseline: torchvision's classic transforms on PIL images.
    pil = batched.per_image(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert pil(Image.fromarray(x[0].permute(1, 2, 0).numpy())).shape == (3, 32, 32)
    # auto: the device loader on a GPU, now that the aug has a batched form.
    gpu = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda")))
    dm = CIFAR10DataModule(source="fake", aug=object(), batched_aug=batched)
    dm.trainer = gpu
    assert dm.resolved_loader == "device"
