"""Everything a training run can be told, with its default: the one place defaults live (the command line reads
them from here)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class TrainOptions:
    """The settings of a training run; the defaults follow the course."""

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
        if self.budget is not None:
            self.budget = parse_duration(self.budget)
        self.candidates = tuple(self.candidates)

    @property
    def backbone_lr(self) -> float:
        return self.fine_tune_lr or self.learning_rate / 10


DEFAULTS = TrainOptions()


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(value: str | float | int) -> float:
    """Seconds from a duration: `90s`, `10m`, `1.5h`, `1h30m`, or a number of seconds; a ValueError says what is
    wrong."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh]?)", text)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smh]?)", "", text).strip():
            raise ValueError(f"--budget {value!r} is not a duration; write it as 90s, 10m or 1h")
        seconds = sum(float(number) * DURATION_UNITS[unit or "s"] for number, unit in parts)
    if not seconds > 0:
        raise ValueError(f"--budget {value!r} is not a duration above zero")
    return seconds
