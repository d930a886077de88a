"""Hostile input to `vistrain serve` and to the pages it and `inspect` write (issue 13): decompression bombs, request
bodies too large or chunked without end, too many files or pixels, script in class and file names, the API docs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA
from vistrain.backbones import get_backbone
from vistrain.data.images import load_rgb
from vistrain.features.transforms import eval_transform

PREPROCESS = get_backbone("efficientnet_lite0").preprocess


# ---- decoding: large images are reduced as they are decoded, ordinary ones are exact ----


def detailed(width: int, height: int, seed: int = 0) -> Image.Image:
    """A picture with detail at every scale: the sum of noise in blocks of 1, 7 and 61 pixels."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((height, width, 3), np.uint8)
    for block in (1, 7, 61):
        noise = rng.integers(0, 86, (height // block + 1, width // block + 1, 3), dtype=np.uint8)
        pixels += noise.repeat(block, 0).repeat(block, 1)[:height, :width]
    return Image.fromarray(pixels)


def test_ordinary_photos_decode_exactly_when_reduction_is_allowed(tmp_path: Path):
    for size in [(640, 480), (2000, 1500), (1500, 2047)]:  # shorter side under 2 x 4 x 256: never reduced
        path = tmp_path / f"{size[0]}.jpg"
        detailed(*size).save(path, quality=90)
        exact, allowed = load_rgb(path), load_rgb(path, reduce_to=PREPROCESS.resize_size)
        assert allowed.size == exact.size and np.array_equal(np.asarray(allowed), np.asarray(exact))


@pytest.mark.skipif(not (SHARED_DATA / "cats-vs-dogs").is_dir(), reason="the shared cats-vs-dogs photos are not here")
def test_the_cats_vs_dogs_photos_reach_the_backbone_unchanged():
    paths = sorted((SHARED_DATA / "cats-vs-dogs" / "val").glob("*/*.jpg"))
    assert len(paths) == 500
    for path in paths:
        assert load_rgb(path, reduce_to=PREPROCESS.resize_size).tobytes() == load_rgb(path).tobytes()


@pytest.mark.parametrize("size, fmt", [((2800, 2100), "JPEG"), ((2100, 2801), "PNG"), ((2333, 3001), "JPEG")])
def test_large_images_are_reduced_with_the_same_geometry(tmp_path: Path, size, fmt: str):
    path = tmp_path / f"large.{fmt.lower()}"
    detailed(*size).save(path, fmt, quality=92)
    reduced = load_rgb(path, reduce_to=PREPROCESS.resize_size)
    assert min(reduced.size) == 4 * PREPROCESS.resize_size and reduced.info["source_size"] == size
    transform = eval_transform(PREPROCESS, output="uint8")
    difference = (transform(reduced).int() - transform(load_rgb(path)).int()).abs()
    assert difference.float().mean() < 0.75 and difference.max() <= 8  # grey levels of the 224 x 224 input


def test_a_reduced_image_keeps_its_exif_orientation(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    detailed(3000, 2200).save(tmp_path / "turned.jpg", exif=exif)
    reduced, exact = load_rgb(tmp_path / "turned.jpg", reduce_to=256), load_rgb(tmp_path / "turned.jpg")
    assert exact.size == (2200, 3000) and reduced.size == (1024, 1396)
    assert reduced.info["source_size"] == exact.info["source_size"] == (2200, 3000)
    shrunk = np.asarray(exact.resize(reduced.size, Image.Resampling.BOX), dtype=float)
    assert np.abs(shrunk - np.asarray(reduced, dtype=float)).mean() < 10  # upright, not turned
