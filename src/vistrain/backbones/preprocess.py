"""Preprocessing configs: how an image becomes a backbone's input (the transforms are in `transforms.py`).

A config travels with every backbone in the registry and is copied into every run's `config.json`;
prediction rebuilds the transform from the run's copy, never from the backbone's current default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes the backbone's input tensor: resize, centre crop, normalise."""

    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize_size(self) -> int:
        """Shorter side after resizing, before the centre crop (timm's rule)."""
        return math.floor(self.input_size / self.crop_pct)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocess":
        """A config written by `to_dict` (a run's config.json), checked: a ValueError names the value that is wrong."""
        if not isinstance(values, dict):
            raise ValueError(f"preprocess is {values!r}, not an object")
        checks = {
            "input_size": (lambda v: type(v) is int and v > 0, "a whole number of pixels"),
            "crop_pct": (lambda v: type(v) in (int, float) and 0 < v <= 1, "a number in (0, 1]"),
            "interpolation": (lambda v: v in INTERPOLATIONS, f"one of {', '.join(INTERPOLATIONS)}"),
            "mean": (_three_numbers, "3 numbers"),
            "std": (lambda v: _three_numbers(v) and all(x > 0 for x in v), "3 numbers above 0"),
        }
        for key, (valid, expected) in checks.items():
            if key not in values:
                raise ValueError(f"preprocess has no {key}")
            if not valid(values[key]):
                raise ValueError(f"preprocess.{key} is {values[key]!r}, not {expected}")
        return cls(values["input_size"], float(values["crop_pct"]), values["interpolation"],
                   tuple(map(float, values["mean"])), tuple(map(float, values["std"])))


def _three_numbers(value: object) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(type(x) in (int, float) for x in value)
