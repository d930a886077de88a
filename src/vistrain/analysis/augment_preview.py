"""The augmentation preview: training images beside augmented versions of themselves."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image

from vistrain.analysis import plots
from vistrain.backbones import get_backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.core.files import write_atomic
from vistrain.data.datasets import load_dataset
from vistrain.data.images import UnreadableImage, load_rgb
from vistrain.data.samples import DataError, Skipped
from vistrain.features.transforms import Augmentation, eval_transform, train_transform


def write_preview(data: Path, out: Path, augmentation: Augmentation, images: int = 4, views: int = 5,
                  backbone: str = "efficientnet_lite0", seed: int = 0) -> list[Skipped]:
    """Write `out` (PNG): `images` training images of DATA, drawn at random (seeded), each beside `views`
    augmented versions, at `backbone`'s input size. Returns the unreadable files passed over."""
    dataset = load_dataset(data, seed=seed)
    preprocess = get_backbone(backbone).preprocess
    pictures, skipped = [], []
    for path in sample_training_images([s.path for s in dataset.train], images * 3, seed):
        try:
            pictures.append(load_rgb(path, reduce_to=preprocess.resize_size))
        except UnreadableImage as error:
            skipped.append(Skipped(path, str(error)))
        if len(pictures) == images:
            break
    if not pictures:
        raise DataError(f"no readable training images in {data}")
    write_atomic(out, preview_grid(pictures, preprocess, augmentation, views, seed))
    return skipped


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
