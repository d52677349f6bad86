"""The search space: ``hydra.sweeper.params`` and the command line's sweep overrides, read by
Hydra's own override parser, as Optuna distributions.

``interval(a, b)`` is a uniform range (integers when both ends are integers or it is tagged
``int``), ``tag(log, interval(a, b))`` the same on a log scale, ``choice(x, y)`` or ``x,y`` a
categorical, ``range(a, b[, step])`` a stepped range. A plain value fixes the key for every
trial. Anything else is a ConfigError before a trial runs, not a surprise in trial 17.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    Glob,
    IntervalSweep,
    Override,
    RangeSweep,
    Sweep,
)
from hydra.errors import OverrideParseException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from cifar_lightning.errors import ConfigError

SYNTAX = (
    "write 'KEY=interval(LOW,HIGH)', 'KEY=tag(log, interval(LOW,HIGH))', "
    "'KEY=choice(A,B,...)' or 'KEY=range(START,STOP,STEP)'"
)


@dataclass
class SearchSpace:
    """What Optuna suggests (``distributions``) and what every trial gets as it is
    (``fixed``: override strings, e.g. ``data=fake``)."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    # How a suggested key is written back as an override (``+key`` for a new key).
    keys: dict[str, str] = field(default_factory=dict)

    def example(self) -> dict[str, Any]:
        """A value of every dimension (its low end, its first option): for checking that a
        trial's command line composes before the study hands out any trial."""
        values = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                values[key] = dist.choices[0]
            else:
                values[key] = dist.low
        return values

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """One trial's command line: the fixed overrides and its suggested values."""
        return [*self.fixed, *(f"{self.keys[k]}={override_value(v)}" for k, v in params.items())]


def override_value(value: Any) -> str:
    """A suggested value as Hydra reads it back: strings quoted unless plainly safe."""
    if isinstance(value, str):
        if value and all(c.isalnum() or c in "_-./:" for c in value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else repr(value)


def parse(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> SearchSpace:
    """The space from the config's ``params`` and the command line (which wins per key)."""
    parser = OverridesParser.create()
    by_key: dict[str, Override] = {}
    for key, value in (params or {}).items():
        text = value if isinstance(value, str) else override_value(value)
        for override in _parse(parser, f"{key}={text}", f"hydra.sweeper.params.{key}"):
            by_key[override.key_or_group] = override
    for argument in arguments:
        for override in _parse(parser, argument, argument):
            by_key[override.key_or_group] = override

    space = SearchSpace()
    for key, override in by_key.items():
        if override.is_sweep_override():
            space.distributions[key] = distribution(key, override.value())
            space.keys[key] = override.get_key_element()
        else:
            space.fixed.append(override.input_line or f"{key}={override.value()}")
    if not space.distributions:
        raise ConfigError(
            "the search space is empty: nothing to search (hydra.sweeper.params has no "
            "interval/choice/range, and neither has the command line).",
            fix="give at least one dimension, e.g. 'optim.lr=tag(log, interval(1e-3,1))'; "
            + SYNTAX,
        )
    return space


def _parse(parser: OverridesParser, line: str, where: str) -> list[Override]:
    try:
        return parser.parse_overrides([line])
    except OverrideParseException as e:
        message = str(e).strip().splitlines()[0]
        raise ConfigError(
            f"cannot read the search dimension {where!r}: {message}", SYNTAX
        ) from None


def distribution(key: str, sweep: Sweep) -> BaseDistribution:
    """One dimension; an empty or impossible one is a ConfigError naming the key."""
    tags = set(sweep.tags)
    unknown = tags - {"log", "int"}
    if unknown:
        raise ConfigError(
            f"{key}: unknown tag {', '.join(sorted(unknown))}.",
            "use tag(log, ...) or tag(int, ...)",
        )
    log = "log" in tags
    if isinstance(sweep, ChoiceSweep):
        return _categorical(key, list(sweep.list), log)
    if isinstance(sweep, RangeSweep):
        return _stepped(key, sweep, log)
    if isinstance(sweep, IntervalSweep):
        return _interval(key, sweep.start, sweep.end, log, integer="int" in tags)
    if isinstance(sweep, Glob):
        raise ConfigError(
            f"{key}: glob() is not a search dimension.", f"list the options: {SYNTAX}"
        )
    raise ConfigError(f"{key}: {type(sweep).__name__} is not a search dimension.", SYNTAX)


def _categorical(key: str, choices: list[Any], log: bool) -> CategoricalDistribution:
    if log:
        raise ConfigError(f"{key}: tag(log, ...) needs an interval, not a choice.", SYNTAX)
    if not choices:
        raise ConfigError(f"{key}: choice() has no options.", "give at least one option")
    for choice in choices:
        if not (choice is None or isinstance(choice, bool | int | float | str)):
            raise ConfigError(
                f"{key}: option {choice!r} is a {type(choice).__name__}; a search can only "
                "choose among numbers, strings, booleans and null.",
                "search over a named config (a group option) instead",
            )
    return CategoricalDistribution(choices)


def _interval(key: str, low: Any, high: Any, log: bool, integer: bool) -> BaseDistribution:
    if low is None or high is None or not low < high:
        raise ConfigError(
            f"{key}: interval({low}, {high}) is empty: its low end must be below its high end.",
            f"swap the ends: interval({high}, {low})"
            if low is not None and high is not None and low > high
            else SYNTAX,
        )
    if log and low <= 0:
        raise ConfigError(
            f"{key}: a log-scale interval must be above zero (it starts at {low}).",
            f"start it above zero, e.g. tag(log, interval({high / 1000:g}, {high}))",
        )
    if integer or (isinstance(low, int) and isinstance(high, int)):
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _stepped(key: str, sweep: RangeSweep, log: bool) -> BaseDistribution:
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if log:
        raise ConfigError(f"{key}: a stepped range cannot be log-scale.", SYNTAX)
    if not step or (stop - start) / step <= 0:
        raise ConfigError(
            f"{key}: range({start}, {stop}, {step}) holds no value.",
            "make STOP lie beyond START in the direction of STEP",
        )
    count = -(-(stop - start) // step)  # values before stop, like Python's range
    last = start + (int(count) - 1) * step
    if all(isinstance(v, int) for v in (start, stop, step)):
        low, high = sorted((start, last))
        return IntDistribution(low, high, step=abs(step))
    low, high = sorted((float(start), float(last)))
    return FloatDistribution(low, high, step=abs(float(step)))
