"""The resolution a network is fine-tuned at, from the data: images far smaller than the backbone's input are
trained near their own size instead of being blown up to it (8 x 8 digits at 64 px rather than 224: a twelfth of
the computation, and no less accurate).

The size is the median shorter side of up to `SAMPLE` training images, read from their headers (nothing is
decoded); the run records the preprocessing it chose, and every later command uses it.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from PIL import Image

from vistrain.backbones.preprocess import Preprocess
from vistrain.core.files import open_data_file

SAMPLE = 256
SMALLEST = 64  # EfficientNet's stride is 32: below 64 px its last stages see a single pixel
STEP = 32


def median_side(paths: list[Path], seed: int = 0) -> int | None:
    """The median shorter side of a seeded sample of `paths`, from the image headers; None when none can be read."""
    sides = []
    for path in random.Random(seed).sample(paths, min(SAMPLE, len(paths))):
        try:
            with open_data_file(path) as file, Image.open(file) as image:
                sides.append(min(image.size))
        except Exception:  # any unreadable file: the feature stage has listed it already
            continue
    return sorted(sides)[len(sides) // 2] if sides else None


def data_preprocess(preprocess: Preprocess, side: int | None) -> Preprocess:
    """The backbone's `preprocess`, or, for images whose shorter side is below its input size, a preprocessing at
    the data's own size (rounded up to a multiple of 32, at least 64 px), the whole image kept (no crop)."""
    if side is None or side >= preprocess.input_size:
        return preprocess
    size = max(SMALLEST, -(-side // STEP) * STEP)
    return preprocess if size >= preprocess.input_size else replace(preprocess, input_size=size, crop_pct=1.0)
