"""What every config value may be: types (dataclasses) and ranges (their fields' metadata).

:func:`validate` checks a composed config against them in one pass, before anything is
written; a wrong type or range is one :class:`ConfigError` with the key, the value and a fix.
Unknown keys never get here: Hydra's struct mode refuses them while composing (``+key=…``
adds one on purpose, for the object that takes it to judge). The schemas are structured
configs merged with the composed nodes, not into Hydra's composition, because the tools
(bench, summary, show_aug) extend training's config with root keys of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode, StringNode

from cifar_lightning.errors import ConfigError


@dataclass(frozen=True)
class Check:
    """``ok(value)`` must hold; ``text`` says what it wants, ``example`` a value that works."""

    ok: Callable[[Any], bool]
    text: str
    example: str
    fix: str | None = None


def checked(default: Any, ok: Callable[[Any], bool], text: str, example: str, fix=None) -> Any:
    kind = "default_factory" if isinstance(default, list) else "default"
    value = (lambda: list(default)) if kind == "default_factory" else default
    return field(**{kind: value}, metadata={"check": Check(ok, text, example, fix)})


def one_of(default: str, *options: str) -> Any:
    text = "must be " + (
        " or ".join(options) if len(options) < 3 else "one of " + ", ".join(options)
    )
    return checked(default, lambda v: v in options, text, options[0])


def positive(v: float) -> bool:
    return v > 0


def fraction(v: float) -> bool:
    return 0 <= v < 1


def three(v: list[float]) -> bool:
    return len(v) == 3


def three_positive(v: list[float]) -> bool:
    return len(v) == 3 and min(v) > 0


THREE = [0.5, 0.5, 0.5]


def at_least(n: int) -> Callable[[Any], bool]:
    return lambda v: v >= n


@dataclass
class Run:
    """The root's own keys."""

    seed: int = checked(42, lambda v: 0 <= v < 2**32, "must be in [0, 2**32)", "42")
    resume: str | None = None
    ckpt_path: str | None = None
    split: str = one_of("test", "test", "val")  # evaluate's
    calibrate: bool = False  # evaluate's


@dataclass
class Data:
    """``data.*``: cifar_lightning/data/datamodule.py."""

    source: str = one_of("cifar10", "cifar10", "cifar100", "imagefolder", "fake")
    root: str | None = None
    classes: list[str] = field(default_factory=list)
    val_size: int = checked(5000, at_least(0), "must be 0 (validate on test) or more", "5000")
    split_seed: int = checked(0, at_least(0), "must be 0 or more", "0")
    shuffle_seed: int = checked(0, at_least(0), "must be 0 or more", "0")
    batch_size: int = checked(128, at_least(1), "must be at least 1", "128")
    num_workers: int | None = checked(None, at_least(0), "must be 0 or more (or null)", "4")
    pin_memory: bool | None = None
    mean: list[float] = checked(THREE, three, "needs three values", "[0.5,0.5,0.5]")
    std: list[float] = checked(
        THREE, three_positive, "needs three values, each > 0", "[0.25,0.25,0.25]"
    )
    download: bool = False
    cache_dir: str = "data/cache"
    fake_train_size: int = checked(2000, at_least(1), "must be at least 1", "2000")
    fake_test_size: int = checked(500, at_least(1), "must be at least 1", "500")
    loader: str = one_of("auto", "auto", "classic", "device")
    drop_last: bool | None = None


@dataclass
class Trainer:
    """``trainer.*``: what Lightning's Trainer takes (the ranges it would only trip over late)."""

    max_epochs: int | None = checked(
        20, lambda v: v >= 1 or v == -1, "trains nothing", "20",
        fix="use a positive number of epochs (or -1 with trainer.max_steps)",
    )  # fmt: skip
    max_steps: int = checked(-1, lambda v: v >= 1 or v == -1, "must be >= 1 or -1", "1000")
    log_every_n_steps: Any = checked(
        "auto", lambda v: v == "auto" or (isinstance(v, int) and v >= 1),
        "must be auto or a number of steps, at least 1", "auto",
    )  # fmt: skip
    accumulate_grad_batches: int = checked(1, at_least(1), "must be at least 1", "1")
    num_sanity_val_steps: int = checked(2, at_least(-1), "must be -1 or more", "2")
    check_val_every_n_epoch: int | None = checked(1, at_least(1), "must be at least 1", "1")
    gradient_clip_val: float | None = checked(None, positive, "must be positive", "1.0")
    deterministic: bool | None = None
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    enable_checkpointing: bool = True


@dataclass
class Optimizer:
    """``optim.*`` every optimizer has; the ones torch ships are typed in full below."""

    lr: float = checked(0.05, positive, "must be positive", "0.05")
    weight_decay: float = checked(0.0, at_least(0), "must be 0 or more", "5e-4")


@dataclass
class SGD(Optimizer):
    momentum: float = checked(0.0, fraction, "must be in [0, 1)", "0.9")
    nesterov: bool = False
    dampening: float = 0.0


@dataclass
class Adam(Optimizer):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False


OPTIMIZERS = {"torch.optim.SGD": SGD, "torch.optim.Adam": Adam, "torch.optim.AdamW": Adam}


@dataclass
class Sched:
    interval: str = one_of("epoch", "step", "epoch")
    frequency: int = checked(1, at_least(1), "must be at least 1", "1")


@dataclass
class Loss:
    label_smoothing: float = checked(0.0, fraction, "must be in [0, 1)", "0.1")


@dataclass
class Mix:
    """``mix.*``: cifar_lightning/training/mixing.py."""

    mode: str = one_of("none", "mixup", "cutmix", "both", "none")
    alpha: float = checked(
        1.0, positive, "must be positive: the mixing weight is drawn from Beta(alpha, alpha)",
        "1.0", fix="e.g. mix.alpha=1.0 (the MixUp paper's value for CIFAR-10); to mix nothing, "
        "use mix.mode=none",
    )  # fmt: skip
    prob: float = checked(1.0, lambda v: 0 <= v <= 1, "must be in [0, 1]", "1.0")
    switch_prob: float = checked(0.5, lambda v: 0 <= v <= 1, "must be in [0, 1]", "0.5")


@dataclass
class EMA:
    """``ema.*``: cifar_lightning/training/callbacks/ema.py."""

    enabled: bool = False
    decay: float = checked(
        0.999, lambda v: 0 < v < 1, "must be in (0, 1): the share of the average kept per step",
        "0.999",
    )  # fmt: skip
    warmup: bool = True


@dataclass
class Aug:
    """The keys of ``aug=`` options that have them (conf/aug/autoaugment.yaml …)."""

    erasing: float = checked(0.0, lambda v: 0 <= v <= 1, "must be a probability in [0, 1]", "0.25")
    policy: str = one_of("cifar10", "cifar10", "imagenet", "svhn")
    n: int = checked(2, at_least(1), "must be at least 1 (operations per image)", "2")
    m: int = checked(9, lambda v: 0 <= v <= 30, "must be in 0..30 (RandAugment's magnitudes)", "9")


@dataclass
class Net:
    """``model.net.*`` the nets of conf/model/ share (any net may take more)."""

    dropout: float = checked(0.5, fraction, "must be in [0, 1)", "0.05")


@dataclass
class Test:
    enabled: bool = True
    ckpt: str = checked("best", lambda v: v in ("best", "last"), "is not best or last", "last")
    tta: str = one_of("none", "none", "flip", "flip_translate")


@dataclass
class Timing:
    enabled: bool = False
    warmup_steps: int = checked(0, at_least(0), "must be 0 or more", "30")


@dataclass
class Tune:
    lr_find: bool = False
    num_training: int = checked(100, at_least(13), "is too few steps for an LR range test: "
                                "Lightning's suggestion skips the first 10 and needs at least 13",
                                "20", fix="use tune.num_training=20 or more (100 is Lightning's "
                                "default)")  # fmt: skip
    min_lr: float = checked(1e-8, positive, "must be positive", "1e-8")
    max_lr: float = checked(1.0, positive, "must be positive", "1.0")
    mode: str = one_of("exponential", "exponential", "linear")
    early_stop_threshold: float | None = 4.0


@dataclass
class Speed:
    channels_last: bool = False
    compile: Any = False


@dataclass
class Corruptions:
    """evaluate's corruption robustness (names are checked where they are known)."""

    enabled: bool = False
    names: list[str] = field(default_factory=list)
    severities: list[int] = checked(
        [1, 2, 3, 4, 5], lambda v: len(v) > 0 and all(1 <= s <= 5 for s in v),
        "must be severities from 1 to 5", "[1,3,5]",
    )  # fmt: skip
    images: int | None = checked(None, at_least(1), "must be at least 1 (null: all)", "1000")
    source: str | None = None
    seed: int = checked(0, lambda v: 0 <= v < 2**32, "must be in [0, 2**32)", "0")


# Where each schema applies; a node a command's config lacks is skipped.
NODES: dict[str, type] = {
    "": Run,
    "data": Data,
    "trainer": Trainer,
    "sched": Sched,
    "loss": Loss,
    "mix": Mix,
    "ema": EMA,
    "aug": Aug,
    "model.net": Net,
    "test": Test,
    "timing": Timing,
    "tune": Tune,
    "speed": Speed,
    "corruptions": Corruptions,
}
TYPE_NAMES = {IntegerNode: "a whole number", FloatNode: "a number", BooleanNode: "true or false"}
TYPE_NAMES[StringNode] = "text"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def _schema_for(path: str, node: DictConfig) -> type | None:
    if path == "optim":
        return OPTIMIZERS.get(str(node.get("_target_")), Optimizer)
    return NODES.get(path)


def _typed(schema: type, values: Mapping[str, Any], path: str) -> None:
    """Merge ``values`` into ``schema``: a value of the wrong type is a ConfigError."""
    typed = OmegaConf.structured(schema)
    OmegaConf.set_struct(typed, False)  # keys beyond the schema are someone else's to judge
    known = {f.name: f for f in fields(schema)}
    for name, value in values.items():  # OmegaConf takes 2 for true: a user never means that
        boolean = name in known and str(known[name].type).startswith("bool")
        if boolean and isinstance(value, int) and not isinstance(value, bool):
            key = f"{path}.{name}" if path else name
            raise ConfigError(f"{key}={value} must be true or false.", f"e.g. {key}=true")
    try:
        OmegaConf.merge(typed, {k: v for k, v in values.items() if k in known and v is not None})
    except ValidationError as e:
        key = f"{path}.{e.key}" if path else str(e.key)
        kind = TYPE_NAMES.get(type(e.child_node), "of its type")
        check = known[str(e.key)].metadata.get("check")
        example = check.example if check else _show(known[str(e.key)].default)
        raise ConfigError(
            f"{key}={_show(e.value)} must be {kind}.", f"e.g. {key}={example}"
        ) from None


def _ranges(schema: type, values: Mapping[str, Any], path: str) -> None:
    for f in fields(schema):
        check, value = f.metadata.get("check"), values.get(f.name)
        if check is not None and value is not None and not check.ok(value):
            key = f"{path}.{f.name}" if path else f.name
            raise ConfigError(
                f"{key}={_show(value)} {check.text}.", check.fix or f"e.g. {key}={check.example}"
            )


def validate(cfg: DictConfig) -> None:
    """Types, then ranges, of every node of ``cfg`` that has a schema."""
    for path in (*NODES, "optim"):
        node = OmegaConf.select(cfg, path) if path else cfg
        if not isinstance(node, DictConfig):
            continue
        schema = _schema_for(path, node)
        if path:
            values = OmegaConf.to_container(node, resolve=True)
        else:
            values = {f.name: cfg.get(f.name) for f in fields(Run) if f.name in cfg}
        _typed(schema, values, path)
        _ranges(schema, values, path)
