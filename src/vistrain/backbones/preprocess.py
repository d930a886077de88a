"""Preprocessing configs: how an image becomes a backbone's input (the transforms are in `transforms.py`).

A config travels with every backbone in the registry and is copied into every run's `config.json`;
prediction rebuilds the transform from the run's copy, never from the backbone's current default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


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
        return cls(
            input_size=int(values["input_size"]),
            crop_pct=float(values["crop_pct"]),
            interpolation=str(values["interpolation"]),
            mean=tuple(float(x) for x in values["mean"]),
            std=tuple(float(x) for x in values["std"]),
        )
