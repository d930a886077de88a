"""The augmentation preview: training images beside augmented versions of themselves."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image

from vistrain import plots
from vistrain.preprocess import Preprocess
from vistrain.transforms import Augmentation, eval_transform, train_transform


def preview_grid(images: list[Image.Image], preprocess: Preprocess, augmentation: Augmentation, views: int,
                 seed: int = 0) -> bytes:
    """PNG: each image (as validation sees it) beside `views` augmented versions (as training sees them)."""
    torch.manual_seed(seed)
    augment = train_transform(preprocess, augmentation, output="uint8")
    plain = eval_transform(preprocess, output="uint8")
    rows = [[_viewable(plain(image))] + [_viewable(augment(image)) for _ in range(views)] for image in images]
    return plots.image_grid(rows, ["original (validation)"] + [f"augmented {i + 1}" for i in range(views)])


def _viewable(pixels: torch.Tensor):
    return pixels.permute(1, 2, 0).numpy()


def sample_training_images(paths: list[Path], count: int, seed: int) -> list[Path]:
    """A seeded random choice of `count` paths, sorted."""
    return sorted(random.Random(seed).sample(paths, min(count, len(paths))))
