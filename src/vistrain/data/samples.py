"""The data layer's types, which every later layer uses: a labelled sample, a skipped file, the task names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The course's table of tasks; what each means for the model is in `vistrain.model.tasks`.
TASKS = ("binary", "multiclass", "multilabel", "regression")
SINGLE_LABEL = ("binary", "multiclass")


class DataError(ValueError):
    """The data cannot be used; the message names the files or folders at fault."""


@dataclass(frozen=True)
class Sample:
    """One labelled image file. `target` is a class id (binary, multiclass), a 0/1 tuple with one entry per
    label (multilabel) or a tuple of numbers (regression)."""

    path: Path
    target: int | tuple[float, ...]


@dataclass(frozen=True)
class Skipped:
    """A file that was left out, and why."""

    path: Path
    reason: str


@dataclass
class Dataset:
    """Training and validation samples with their output names (index = class id, label or target column), and
    human names for some of them (`vistrain.data.class_names`)."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    layout: str
    skipped: list[Skipped] = field(default_factory=list)
    task: str = "auto"
    task_reason: str = ""
    class_names: dict[str, str] = field(default_factory=dict)  # class -> name, for the classes a mapping names
