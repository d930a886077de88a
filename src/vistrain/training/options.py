"""Everything a training run can be told, with its default and the values it accepts: the one place both live (the
command line builds its options from `DEFAULTS`, `BOUNDS` and `CHOICES`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from vistrain.core.device import DEVICES
from vistrain.core.errors import OptionError, quoted
from vistrain.data.samples import TASKS
from vistrain.features.precision import AUTO, PRECISIONS
from vistrain.model import HEADS


@dataclass(frozen=True)
class Bounds:
    """The numbers an option accepts: integers or reals, from `low` to `high` (either open, either absent)."""

    integer: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def accepts(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        """`an integer >= 1`, `a number > 0 and < 1`."""
        limits = [f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "",
                  f"{'<' if self.high_open else '<='} {self.high:g}" if self.high is not None else ""]
        return f"{'an integer' if self.integer else 'a number'} {' and '.join(filter(None, limits))}".strip()


# The values each option accepts (None is also accepted where the default is None).
BOUNDS = {
    "hidden": Bounds(True, 1),
    "dropout": Bounds(False, 0, 1, high_open=True),
    "epochs": Bounds(True, 1),
    "batch_size": Bounds(True, 1),
    "learning_rate": Bounds(False, 0, low_open=True),
    "val_fraction": Bounds(False, 0, 1, low_open=True, high_open=True),
    "seed": Bounds(True),
    "label_depth": Bounds(True, 1),
    "augment_views": Bounds(True, 0),
    "fine_tune": Bounds(True, 0),
    "fine_tune_epochs": Bounds(True, 1),
    "fine_tune_lr": Bounds(False, 0, low_open=True),
    "patience": Bounds(True, 1),
}
CHOICES = {
    "task": ("auto", *TASKS),
    "head": HEADS,
    "class_weight": ("balanced",),
    "sampler": ("balanced",),
    "precision": (AUTO, *PRECISIONS),
    "device": DEVICES,
}


@dataclass
class TrainOptions:
    """The settings of a training run; the defaults follow the course. Each is checked when the options are made: a
    value out of range is an `OptionError` (a ValueError) naming the field."""

    backbone: str = "efficientnet_lite0"
    task: str = "auto"
    head: str = "mlp"
    hidden: int = 256
    dropout: float = 0.2
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.001
    val_fraction: float = 0.2
    seed: int = 0
    label_depth: int = 1  # the folder level that names the class: 1 = the top-level folders
    class_weight: str | None = None  # "balanced": loss weights against class imbalance
    sampler: str | None = None  # "balanced": draw batches so that classes come up equally often
    augment_views: int = 0  # augmented versions of each training image whose features are cached and trained on
    fine_tune: int = 0  # then unfreeze the backbone's last this many blocks and train them with the head
    fine_tune_epochs: int = 5
    fine_tune_lr: float | None = None  # the backbone's, while fine-tuning [default: learning_rate / 10]
    patience: int = 3  # fine-tuning stops after this many epochs without a lower validation loss
    precision: str = "auto"  # int8 (the backbone quantised on the training images, features/int8.py) where the CPU
    # has int8 dot products and the backbone stays frozen, else fp32 (features/cpu.py); a run records the one chosen
    feature_stages: tuple[int, ...] = ()  # also pool these stages of the backbone (features from several depths)
    device: str = "auto"  # where torch work runs: "auto" (a CUDA GPU when there is one), "cpu" or "cuda"
    budget: float | str | None = None  # wall time to spend (seconds, or "90s", "10m", "1h"): try candidates, keep the best
    candidates: tuple[str, ...] = ()  # under a budget, only these (see training.budget.CANDIDATES); () for all

    def __post_init__(self) -> None:
        for option in fields(self):
            check_option(option.name, getattr(self, option.name), option.default)
        if self.budget is not None:
            self.budget = parse_duration(self.budget)
        self.candidates = tuple(self.candidates)
        self.feature_stages = tuple(self.feature_stages)
        if not all(isinstance(stage, int) and not isinstance(stage, bool) and stage >= 0
                   for stage in self.feature_stages):
            raise OptionError(f"{{feature_stages}} are stage numbers from 0; {quoted(self.feature_stages)} is not")

    @property
    def backbone_lr(self) -> float:
        return self.fine_tune_lr or self.learning_rate / 10


def check_option(name: str, value: object, default: object) -> None:
    """An `OptionError` when `value` is not one that option `name` accepts (`BOUNDS`, `CHOICES`)."""
    if value is None and default is None:
        return
    if name in BOUNDS and not BOUNDS[name].accepts(value):
        raise OptionError(f"{{{name}}} must be {BOUNDS[name].describe()}, not {quoted(repr(value))}")
    if name in CHOICES and value not in CHOICES[name]:
        raise OptionError(f"{{{name}}} must be one of {', '.join(CHOICES[name])}, not {quoted(repr(value))}")


DEFAULTS = TrainOptions()


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(value: str | float | int) -> float:
    """Seconds from a duration: `90s`, `10m`, `1.5h`, `1h30m`, or a number of seconds; an `OptionError` (of
    `budget`) says what is wrong."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh]?)", text)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smh]?)", "", text).strip():
            raise OptionError(f"{{budget}} {quoted(repr(value))} is not a duration; write it as 90s, 10m or 1h")
        seconds = sum(float(number) * DURATION_UNITS[unit or "s"] for number, unit in parts)
    if not seconds > 0:
        raise OptionError(f"{{budget}} {quoted(repr(value))} is not a duration above zero")
    return seconds
