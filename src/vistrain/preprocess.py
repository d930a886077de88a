"""Preprocessing configs and the eval transform built from them.

A config travels with every backbone in the registry and is copied into every run's `config.json`;
prediction rebuilds the transform from the run's copy, never from the backbone's current default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2


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


def eval_transform(preprocess: Preprocess) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side, centre crop, scale to 0-1 and normalise: PIL RGB image -> CHW float tensor."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(preprocess.resize_size, interpolation=InterpolationMode(preprocess.interpolation), antialias=True),
            v2.CenterCrop(preprocess.input_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(preprocess.mean), std=list(preprocess.std)),
        ]
    )
