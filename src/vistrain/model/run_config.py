"""config.json, typed: `RunConfig` is what a trained run records, `to_json` the JSON object written and `from_json`
the one way to read it back. config.json is untrusted: `from_json` checks every value predicting uses, and a
missing or wrong one is a ValueError naming its key (`run_dir.read_config` adds the file).

Keys that runs of earlier versions lack read as what those runs did: `precision` fp32 and no `calibration` (before
--precision), no `backbone.stages` (before --feature-stages: the last block's features), no `backbone.parts` (before
a concatenation's parts took their own preprocessing: each part had the run's one), no `class_names`, `thresholds`,
`head.fit`, `fine_tune` or `budget` (runs without them), and empty `created`, `training`, `data` and `versions`.
What the run records of how it was trained (`training`, `fine_tune`, `budget`, `data`, `versions`, `head.fit`) is
kept as the JSON object it is; only what is read from it is typed (`seed`, `tuned_backbone`).
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Any, Callable

from vistrain.backbones.preprocess import Preprocess
from vistrain.data.class_names import class_labels
from vistrain.data.samples import TASKS
from vistrain.features.precision import PRECISIONS
from vistrain.model import HEADS

_REQUIRED = object()  # `_value`'s default for a key every config.json has


def _number(value: object) -> bool:
    return type(value) in (int, float)


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch("[0-9a-f]{64}", value) is not None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _value(values: dict, key: str, valid: Callable[[Any], bool], expected: str, default: object = _REQUIRED,
           within: str = "") -> Any:
    """values[key], checked by `valid`; `default` where it is absent (required when there is none)."""
    if key not in values:
        if default is _REQUIRED:
            raise ValueError(f"no {within}{key}")
        return default
    if not valid(values[key]):
        raise ValueError(f"{within}{key} is {_shown(values[key])}, not {expected}")
    return values[key]


def _object(values: dict, key: str, within: str = "") -> dict:
    """An optional JSON object of what the run records ({} where absent)."""
    return _value(values, key, lambda v: isinstance(v, dict), "an object", {}, within)


def package_versions() -> dict[str, str]:
    names = ["vistrain", "torch", "torchvision", "timm", "numpy", "pillow", "scikit-learn", "safetensors"]
    return {"python": platform.python_version(), **{name: version(name) for name in names}}


@dataclass(frozen=True)
class PartConfig:
    """One backbone of a concatenation, with the preprocessing its input had."""

    name: str
    preprocess: Preprocess


def _part(index: int, values: dict) -> PartConfig:
    try:
        return PartConfig(values["name"], Preprocess.from_dict(values.get("preprocess")))
    except ValueError as error:  # Preprocess names "preprocess...": say whose
        raise ValueError(f"backbone.parts[{index}].{error}") from None


@dataclass(frozen=True)
class BackboneConfig:
    """config.json's `backbone`: the backbone the features came from."""

    name: str
    weights: str  # the weights' identity, compared with the ones this machine has
    feature_dim: int | None = None
    stages: tuple[int, ...] = ()  # --feature-stages: the blocks whose features are pooled; (): the last one
    parts: tuple[PartConfig, ...] | None = None  # a concatenation's; None: not recorded (one preprocessing for all)

    def to_json(self) -> dict:
        return {"name": self.name, "weights": self.weights,
                **({"feature_dim": self.feature_dim} if self.feature_dim is not None else {}),
                **({"stages": list(self.stages)} if self.stages else {}),
                **({"parts": [{"name": part.name, "preprocess": part.preprocess.to_dict()} for part in self.parts]}
                   if self.parts is not None else {})}

    @classmethod
    def from_json(cls, values: object) -> BackboneConfig:
        if not isinstance(values, dict):
            raise ValueError(f"backbone is {_shown(values)}, not an object with a name and weights")
        stages = _value(values, "stages", lambda v: isinstance(v, list) and all(type(s) is int for s in v),
                        "a list of block numbers", [], "backbone.")
        parts = _value(values, "parts", lambda v: isinstance(v, list) and all(
            isinstance(p, dict) and isinstance(p.get("name"), str) for p in v),
                       "a list of objects with a name and a preprocess", None, "backbone.")
        return cls(_value(values, "name", lambda v: isinstance(v, str) and v != "", "a name", within="backbone."),
                   _value(values, "weights", lambda v: isinstance(v, str), "text", within="backbone."),
                   _value(values, "feature_dim", lambda v: type(v) is int and v > 0, "a whole number", None,
                          "backbone."),
                   tuple(stages), None if parts is None else tuple(_part(i, part) for i, part in enumerate(parts)))


@dataclass(frozen=True)
class HeadConfig:
    """config.json's `head`: the layers on the features."""

    kind: str  # one of `vistrain.model.HEADS`
    hidden: int
    dropout: float
    fit: dict = field(default_factory=dict)  # a closed-form head's fit: its strength, decision offsets

    def to_json(self) -> dict:
        return {"kind": self.kind, "hidden": self.hidden, "dropout": self.dropout,
                **({"fit": self.fit} if self.fit else {})}

    @classmethod
    def from_json(cls, values: object) -> HeadConfig:
        if not isinstance(values, dict):
            raise ValueError(f"head is {_shown(values)}, not an object with a kind, hidden and dropout")
        return cls(_value(values, "kind", lambda v: v in HEADS, f"one of {', '.join(HEADS)}", within="head."),
                   _value(values, "hidden", lambda v: type(v) is int and v >= 1, "a whole number of units",
                          within="head."),
                   _value(values, "dropout", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)",
                          within="head."),
                   _object(values, "fit", "head."))


@dataclass(frozen=True)
class RunConfig:
    """A trained run's config.json: everything predicting needs (backbone, preprocessing, the features' precision
    and calibration images, classes in index order and their names, task, head, thresholds) and how the run was
    trained. A new one records when it was made and this machine's package versions."""

    backbone: BackboneConfig
    preprocess: Preprocess
    classes: tuple[str, ...]
    task: str  # one of `vistrain.data.samples.TASKS`
    head: HeadConfig
    precision: str = "fp32"  # one of `vistrain.features.precision.PRECISIONS`
    calibration: tuple[tuple[str, str], ...] = ()  # seeded training images, (file, SHA-256)
    class_names: dict[str, str] = field(default_factory=dict)  # {class: name}, where a mapping named them
    thresholds: tuple[float, ...] | None = None  # multilabel: one a label, tuned on validation
    training: dict = field(default_factory=dict)  # the settings, the best epoch and its rule
    fine_tune: dict = field(default_factory=dict)  # with fine-tuning: its settings; `sha256` when it was kept
    budget: dict = field(default_factory=dict)  # with --budget: the candidates' budget and the one chosen
    data: dict = field(default_factory=dict)  # where the images came from and how many were used
    versions: dict = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def labels(self) -> list[str]:
        """How the classes are shown: by their names, else by their ids (`vistrain.data.class_names`)."""
        return class_labels(list(self.classes), self.class_names)

    @property
    def tuned_backbone(self) -> str | None:
        """The SHA-256 of RUN/backbone.safetensors when fine-tuning beat the frozen head, else None."""
        return self.fine_tune.get("sha256")

    @property
    def seed(self) -> int:
        return self.training.get("seed", 0)

    def to_json(self) -> dict:
        """The JSON object config.json holds (the keys runs have always had)."""
        return {"created": self.created, "backbone": self.backbone.to_json(), "preprocess": self.preprocess.to_dict(),
                "precision": self.precision, "calibration": [list(image) for image in self.calibration],
                "classes": list(self.classes), **({"class_names": self.class_names} if self.class_names else {}),
                "task": self.task, **({"thresholds": list(self.thresholds)} if self.thresholds else {}),
                "head": self.head.to_json(), "training": self.training,
                **({"fine_tune": self.fine_tune} if self.fine_tune else {}),
                **({"budget": self.budget} if self.budget else {}), "data": self.data, "versions": self.versions}

    @classmethod
    def from_json(cls, values: object) -> RunConfig:
        """The config a config.json's JSON holds, checked: a ValueError naming the first key found wrong."""
        if not isinstance(values, dict):
            raise ValueError(f"it holds a JSON {type(values).__name__}, not an object")
        missing = [key for key in ("backbone", "preprocess", "classes", "task", "head") if key not in values]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        task, classes = values["task"], values["classes"]
        if task not in TASKS:
            raise ValueError(f"unknown task {_shown(task)} (tasks: {', '.join(TASKS)})")
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
                and len(set(classes)) == len(classes)):
            raise ValueError(f"classes is {_shown(classes)}, not a list of distinct names")
        if task == "binary" and len(classes) != 2:
            raise ValueError(f"a binary model has 2 classes, not {len(classes)}")
        names = _value(values, "class_names", lambda v: isinstance(v, dict), "an object of class: name", {})
        unknown = next((c for c in names if c not in classes), None)
        if unknown is not None:
            raise ValueError(f"class_names names {_shown(unknown)}, which is not one of the classes")
        unnamed = next((c for c, name in names.items() if not (isinstance(name, str) and name.strip())), None)
        if unnamed is not None:
            raise ValueError(f"class_names gives {_shown(unnamed)} the name {_shown(names[unnamed])}, not a name")
        thresholds = _value(values, "thresholds", lambda v: isinstance(v, list) and len(v) == len(classes) and all(
            _number(t) for t in v), f"a number for each of the {len(classes)} labels", None)
        if task == "multilabel" and thresholds is None:
            raise ValueError(f"a multi-label model needs a threshold per label ({len(classes)}): no thresholds")
        precision = _value(values, "precision", lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}", "fp32")
        calibration = _value(values, "calibration", lambda v: isinstance(v, list) and all(
            isinstance(image, list) and len(image) == 2 and isinstance(image[0], str) and _is_sha256(image[1])
            for image in v), "a list of [file, SHA-256] pairs", [])
        if precision == "int8" and not calibration:
            raise ValueError("an int8 model needs its calibration images (calibration is empty)")
        fine_tune, training = _object(values, "fine_tune"), _object(values, "training")
        _value(fine_tune, "sha256", _is_sha256, "a SHA-256", None, "fine_tune.")
        _value(training, "seed", lambda v: type(v) is int, "a whole number", None, "training.")
        return cls(
            BackboneConfig.from_json(values["backbone"]), Preprocess.from_dict(values["preprocess"]), tuple(classes),
            task, HeadConfig.from_json(values["head"]), precision,
            tuple((file, digest) for file, digest in calibration), names,
            None if thresholds is None else tuple(float(t) for t in thresholds), training, fine_tune,
            _object(values, "budget"), _object(values, "data"), _object(values, "versions"),
            _value(values, "created", lambda v: isinstance(v, str), "text", ""))
