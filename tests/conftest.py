"""Shared fixtures: images and data folders made by the tests themselves (no downloads, no shared data)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from vistrain.cli import main

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory) -> Path:
    """One feature cache for the whole test session, never the user's own."""
    path = tmp_path_factory.mktemp("feature-cache")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("VISTRAIN_CACHE", str(path))
    yield path
    patcher.undo()


def shape_image(kind: str, seed: int, size: int = 96) -> Image.Image:
    """A random-coloured circle or square on a noisy background: easy for an ImageNet backbone to tell apart."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed).integers(0, 60, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(noise + np.uint8(rng.randrange(100, 180)))
    draw = ImageDraw.Draw(image)
    r = rng.randrange(size // 4, size // 3)
    cx, cy = rng.randrange(r, size - r), rng.randrange(r, size - r)
    colour = tuple(rng.randrange(0, 256) for _ in range(3))
    box = (cx - r, cy - r, cx + r, cy + r)
    (draw.ellipse if kind == "circle" else draw.rectangle)(box, fill=colour)
    return image


def write_class_folders(root: Path, per_class: int, classes=("circle", "square"), offset: int = 0) -> Path:
    for c, kind in enumerate(classes):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image(kind if kind in ("circle", "square") else ("circle", "square")[c % 2],
                        seed=offset + 1000 * c + i).save(folder / f"{kind}_{i}.png")
    return root


@pytest.fixture(scope="session")
def shapes_split(tmp_path_factory) -> Path:
    """shapes/train/{circle,square} (16 each) and shapes/val/{circle,square} (8 each)."""
    root = tmp_path_factory.mktemp("shapes")
    write_class_folders(root / "train", 16)
    write_class_folders(root / "val", 8, offset=500)
    return root


TRAIN_ARGS = ["--epochs", "15", "--seed", "1"]


def invoke(*args):
    """Run the `vistrain` command line in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def run(shapes_split: Path, tmp_path_factory) -> Path:
    """A run directory trained on the shapes with the command line."""
    out = tmp_path_factory.mktemp("runs") / "shapes"
    result = invoke("train", shapes_split, "--out", out, *TRAIN_ARGS)
    assert result.exit_code == 0, result.output
    return out
