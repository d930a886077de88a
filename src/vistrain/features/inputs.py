"""What each backbone of a feature vector takes, image files decoded once into all of it, and an image as the
uint8 pixels an exported model takes (`prepare_image`).

A concatenation's parts each take their own preprocessing, as each does alone, so that their features are cached
once for both uses (`--backbone efficientnet_lite0`, then `efficientnet_lite0+efficientnet_lite2`, computes Lite2
only, and the other way round); an image is decoded once for all parts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vistrain.backbones import Backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.data.images import load_pixels, load_rgb, reduced_size
from vistrain.features.transforms import View, eval_transform


def backbone_inputs(backbone: Backbone, preprocess: Preprocess) -> list[tuple[Backbone, Preprocess]]:
    """The backbones features are computed by, each with the preprocessing it takes: a concatenation's parts with
    their own (`Backbone.preprocess`), any other backbone with `preprocess` (the run's)."""
    if backbone.parts:
        return [(part, part.preprocess) for part in backbone.parts]
    return [(backbone, preprocess)]


class PartPixels:
    """An image file -> the uint8 CHW pixels of `view` for each of `preprocesses`, decoded once for all of them (a
    large image that some preprocessing would reduce differently while decoding is decoded once for each)."""

    def __init__(self, preprocesses: list[Preprocess], view: View):
        self.transforms = [view.transform(preprocess) for preprocess in preprocesses]
        self.reduce_to = [preprocess.resize_size for preprocess in preprocesses]

    def __call__(self, path: Path, digest: str, wanted: tuple[int, ...]) -> dict[int, torch.Tensor]:
        """{i: pixels for preprocesses[i]} for each i in `wanted`; UnreadableImage when the file cannot be used."""
        largest = max(self.reduce_to[i] for i in wanted)
        pixels, source = load_pixels(path, reduce_to=largest)
        found = {}
        for i in wanted:
            same = reduced_size(source, self.reduce_to[i]) == reduced_size(source, largest)
            found[i] = self.transforms[i](pixels if same else load_pixels(path, reduce_to=self.reduce_to[i])[0], digest)
        return found


def prepare_image(image: str | Path | Image.Image, preprocess: Preprocess) -> np.ndarray:
    """An image file (read with `load_rgb`: any format, EXIF orientation) or RGB PIL image, resized and
    centre-cropped as `eval_transform` does: the uint8 H x W x 3 array an exported model takes."""
    if isinstance(image, (str, Path)):
        image = load_rgb(image, reduce_to=preprocess.resize_size)  # as `vistrain predict` reads files
    return eval_transform(preprocess, output="uint8")(image).permute(1, 2, 0).numpy()
