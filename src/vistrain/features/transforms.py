"""Train and eval transforms (as torchvision's classification presets): PIL RGB image -> tensor.

Both resize the shorter side and centre crop; the train transform augments first (torchvision's RandomAffine and
RandomHorizontalFlip). A transform ends in one of two `OUTPUTS`: "normalized" (float, the backbone's input) or
"uint8" (the resized and cropped pixels: for showing, and 4 times smaller to pass on; the `PixelNormalize` module
at the start of the feature extractor normalises them, as the "normalized" transform does).
Augmentation is applied to training images only, never to validation or prediction.

Resizing and cropping call torch directly, exactly as torchvision's `Resize(antialias=True)` and `CenterCrop` do
(a test checks they agree pixel for pixel): importing torchvision imports torch._dynamo, seconds of start-up
that every `train`, `predict` and `serve` would pay; only augmentation imports it.

An image more than WINDOW_ABOVE times longer than wide (or wider than long) is resized only where the centre crop
lies (`resize_and_crop`): a 1 x 20,000 PNG would otherwise be upscaled to 256 x 5,120,000 pixels (3.9 GB) to keep
224 x 224 of them. The window starts where its resized pixels fall on the full resize's grid when such a place is
near (then the pixels are the same), else as close to it as the search finds (a shift of a fraction of a pixel).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import torch
from PIL import Image
from torch import nn

from vistrain.backbones.preprocess import INTERPOLATIONS, Preprocess


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
WINDOW_ABOVE = 16  # longer side over shorter side beyond which only the crop's window is resized
WINDOW_SEARCH = 2048  # output pixels searched for a window start on the full resize's grid
SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}  # the filters' reach, in pixels of the smaller of input and output


def eval_transform(preprocess: Preprocess, output: str = "normalized") -> "ImageTransform":
    """Resize the shorter side and centre crop, then finish as `output` says: PIL RGB image -> CHW tensor."""
    return ImageTransform(preprocess, output)


def train_transform(preprocess: Preprocess, augmentation: Augmentation, output: str = "normalized") -> "ImageTransform":
    """Augment (random rotation, shift, zoom and flip), then as `eval_transform`."""
    return ImageTransform(preprocess, output, augmentation)


class ImageTransform:
    """PIL RGB image -> CHW tensor: optionally augment, resize the shorter side, centre crop, finish as `output`.
    A class rather than a closure, so that data-loader worker processes can pickle it."""

    def __init__(self, preprocess: Preprocess, output: str = "normalized", augmentation: Augmentation | None = None):
        if output not in OUTPUTS:
            raise ValueError(f"unknown transform output {output!r}; outputs: {', '.join(OUTPUTS)}")
        if preprocess.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unsupported interpolation {preprocess.interpolation!r}; "
                             f"supported: {', '.join(INTERPOLATIONS)}")
        self.preprocess = preprocess
        self.output = output
        self.augment = _augmenter(augmentation) if augmentation else None
        self.normalize = PixelNormalize(preprocess) if output == "normalized" else None

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """`image`: a PIL image, or H x W x 3 uint8 RGB pixels (`load_pixels`), which are not copied."""
        array = image if isinstance(image, np.ndarray) else np.array(image.convert("RGB"))
        pixels = torch.from_numpy(array)[None].permute(0, 3, 1, 2)  # 1 x 3 x H x W, channels last
        if self.augment:
            pixels = self.augment(pixels)
        pixels = resize_and_crop(pixels, self.preprocess.resize_size, self.preprocess.input_size,
                                 self.preprocess.interpolation)
        return (self.normalize(pixels) if self.normalize else pixels.contiguous())[0]


def resize_and_crop(pixels: torch.Tensor, size: int, crop: int, interpolation: str) -> torch.Tensor:
    """uint8 N x 3 x H x W -> the central `crop` x `crop` pixels of the image resized to a shorter side of `size`
    (`resize_shorter_side`, then `center_crop`). Along the longer side of an image more than WINDOW_ABOVE times
    longer than wide, only the source pixels that reach the crop are resized: memory is set by the output."""
    height, width = pixels.shape[-2:]
    new_height, new_width = resized_shape(height, width, size)
    if max(new_height, new_width) <= WINDOW_ABOVE * size:
        return center_crop(resize_shorter_side(pixels, size, interpolation), crop)
    wide = new_width > new_height
    source, resized = (width, new_width) if wide else (height, new_height)
    start = int(round((resized - crop) / 2.0))  # the crop's first pixel along the longer side
    first, end, offset = _window(source, resized, start, crop, interpolation)
    part = pixels.narrow(-1 if wide else -2, first, end - first)
    resize = partial(torch.nn.functional.interpolate, mode=interpolation, align_corners=False, antialias=True)
    if wide:  # as torch does within one call: the width first, then the height
        part = resize(part, scale_factor=(1.0, resized / source), recompute_scale_factor=False)  # the window's grid
        part = resize(part.narrow(-1, start - offset, crop), size=(new_height, crop))
    else:
        part = resize(part, size=(part.shape[-2], new_width))
        part = resize(part, scale_factor=(resized / source, 1.0), recompute_scale_factor=False).narrow(-2, start - offset,
                                                                                                        crop)
    return center_crop(part, crop)


def _window(source: int, resized: int, start: int, crop: int, interpolation: str) -> tuple[int, int, int]:
    """(first, end, offset): the source pixels [first, end) along the longer side that output pixels [start,
    start + crop) of the full resize read, the first one chosen where its resized position (`offset`) is nearest
    a whole pixel, so that the window is resized on the same grid."""
    scale = source / resized
    reach = SUPPORT[interpolation] * max(scale, 1.0) + 1  # source pixels an output pixel reads on either side
    latest = max(0, math.floor(start * scale - reach))
    earliest = max(0, latest - math.floor(min(WINDOW_SEARCH * scale, WINDOW_SEARCH)))
    first = min(range(latest, earliest - 1, -1), key=lambda a: abs(a / scale - round(a / scale)))
    end = math.ceil((start + crop) * scale + reach) + 1
    if resized != source:  # torch does not resize a window whose resized length would equal its own
        end = max(end, first + math.ceil(1 / abs(1 / scale - 1)) + 2)
    return first, min(source, end), round(first / scale)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the shorter side `size` and the longer one in proportion, rounded down."""
    short, long = min(height, width), max(height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resize_shorter_side(pixels: torch.Tensor, size: int, interpolation: str) -> torch.Tensor:
    """uint8 N x 3 x H x W -> the shorter side `size` (the longer one in proportion, rounded down), antialiased."""
    height, width = pixels.shape[-2:]
    new_size = resized_shape(height, width, size)
    if new_size == (height, width):
        return pixels
    return torch.nn.functional.interpolate(pixels, size=new_size, mode=interpolation, align_corners=False,
                                           antialias=True)


def center_crop(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """The central `size` x `size` pixels of images at least that large."""
    height, width = pixels.shape[-2:]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return pixels[..., top : top + size, left : left + size]


def _augmenter(augmentation: Augmentation):
    from torchvision.transforms import InterpolationMode, v2  # slow to import (see above): only when augmenting

    return v2.Compose([
        v2.RandomAffine(
            degrees=augmentation.rotation,
            translate=(augmentation.shift, augmentation.shift),
            scale=(1 - augmentation.zoom, 1 + augmentation.zoom),
            interpolation=InterpolationMode.BILINEAR,
            fill=0,
        ),
        v2.RandomHorizontalFlip(0.5 if augmentation.flip else 0.0),
    ])


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
    """A `View`'s transform: uint8 pixels of the plain, mirrored or seeded augmented image."""

    def __init__(self, view: View, preprocess: Preprocess):
        self.view = view
        augmented = view.kind == "augmented"
        self.steps = ImageTransform(preprocess, "uint8", view.augmentation if augmented else None)

    def __call__(self, image: Image.Image | np.ndarray, digest: str) -> torch.Tensor:
        if self.view.kind == "augmented":
            with torch.random.fork_rng():
                torch.manual_seed(int(digest[:15], 16) + 1_000_003 * self.view.index)
                return self.steps(image)
        x = self.steps(image)
        return x.flip(-1) if self.view.kind == "flip" else x
