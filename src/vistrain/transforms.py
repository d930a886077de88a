"""Train and eval transforms (as torchvision's classification presets): PIL RGB image -> tensor.

A transform ends in one of two `OUTPUTS`: "normalized" (float, the backbone's input) or "uint8" (the resized
and cropped pixels: for showing, and 4 times smaller to pass between processes; the `PixelNormalize` module at
the start of the feature extractor scales and normalises them exactly as the "normalized" transform does). Augmentation is applied to training images only, never to validation or prediction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from vistrain.preprocess import Preprocess


@dataclass(frozen=True)
class Augmentation:
    """Random changes made to each training image, as in the course: rotation ±20°, shift, zoom, flip."""

    rotation: float = 20.0  # degrees, either way
    shift: float = 0.1  # share of width/height, either way
    zoom: float = 0.1  # scale between 1 - zoom and 1 + zoom
    flip: bool = True  # horizontal

    def to_dict(self) -> dict:
        return asdict(self)


OUTPUTS = ("normalized", "uint8")


def eval_transform(preprocess: Preprocess, output: str = "normalized") -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side and centre crop, then scale and normalise as `output` says: PIL RGB image -> CHW
    tensor."""
    steps = [v2.PILToTensor(), *_resize_and_crop(preprocess)]
    return v2.Compose(steps + _finish(preprocess, output))


def train_transform(preprocess: Preprocess, augmentation: Augmentation,
                    output: str = "normalized") -> Callable[[Image.Image], torch.Tensor]:
    """Augment, then resize and centre-crop like the eval transform, and finish as `output` says."""
    steps = [
        v2.PILToTensor(),
        v2.RandomAffine(
            degrees=augmentation.rotation,
            translate=(augmentation.shift, augmentation.shift),
            scale=(1 - augmentation.zoom, 1 + augmentation.zoom),
            interpolation=InterpolationMode.BILINEAR,
            fill=0,
        ),
        v2.RandomHorizontalFlip(0.5 if augmentation.flip else 0.0),
        *_resize_and_crop(preprocess),
    ]
    return v2.Compose(steps + _finish(preprocess, output))


def _resize_and_crop(preprocess: Preprocess) -> list:
    interpolation = InterpolationMode(preprocess.interpolation)
    return [v2.Resize(preprocess.resize_size, interpolation=interpolation, antialias=True),
            v2.CenterCrop(preprocess.input_size)]


def _finish(preprocess: Preprocess, output: str) -> list:
    if output not in OUTPUTS:
        raise ValueError(f"unknown transform output {output!r}; outputs: {', '.join(OUTPUTS)}")
    if output == "uint8":
        return []
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(preprocess.mean), std=list(preprocess.std))]


class PixelNormalize(nn.Module):
    """uint8 N x 3 x H x W pixels -> the backbone's normalised float input: /255, minus mean, over std."""

    def __init__(self, preprocess: Preprocess):
        super().__init__()
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() / 255 - self.mean) / self.std


@dataclass(frozen=True)
class View:
    """Which version of each image features are computed from: as validation sees it (`eval`), mirrored
    (`flip`, for test-time augmentation), or its `index`-th augmented version (`augmented`, for
    `train --augment-views`; the same file and index always give the same augmentation, so it can be cached)."""

    kind: str = "eval"
    index: int = 0
    augmentation: Augmentation | None = None

    def identity(self) -> dict | None:
        """What distinguishes this view in a feature-cache key; None for `eval`, the key of earlier versions."""
        if self.kind == "eval":
            return None
        return {"kind": self.kind, "index": self.index,
                "augmentation": self.augmentation.to_dict() if self.augmentation else None}

    def transform(self, preprocess: Preprocess) -> "ViewTransform":
        """(image, file digest) -> uint8 CHW pixels (see `PixelNormalize`); the digest seeds an augmented view."""
        if self.kind not in ("eval", "flip", "augmented") or (self.kind == "augmented") != bool(self.augmentation):
            raise ValueError(f"unknown view {self}")
        return ViewTransform(self, preprocess)


class ViewTransform:
    """A `View`'s transform (a class rather than a closure, so that data-loader workers can pickle it)."""

    def __init__(self, view: View, preprocess: Preprocess):
        self.view = view
        augmented = view.kind == "augmented"
        self.steps = (train_transform(preprocess, view.augmentation, output="uint8") if augmented
                      else eval_transform(preprocess, output="uint8"))

    def __call__(self, image: Image.Image, digest: str) -> torch.Tensor:
        if self.view.kind == "augmented":
            with torch.random.fork_rng():
                torch.manual_seed(int(digest[:15], 16) + 1_000_003 * self.view.index)
                return self.steps(image)
        x = self.steps(image)
        return x.flip(-1) if self.view.kind == "flip" else x
