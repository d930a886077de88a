"""Feature views: augmented versions of training images (cached, reproducible) and test-time augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import ImageOps

from conftest import TRAIN_ARGS, invoke, shape_image
from vistrain.backbones import get_backbone
from vistrain.features.transforms import Augmentation, View


def test_an_augmented_view_is_the_same_for_the_same_file_and_index():
    preprocess = get_backbone("efficientnet_lite0").preprocess
    image = shape_image("circle", 1)
    first = View("augmented", 1, Augmentation()).transform(preprocess)
    again = View("augmented", 1, Augmentation()).transform(preprocess)
    second = View("augmented", 2, Augmentation()).transform(preprocess)
    assert torch.equal(first(image, "ab" * 32), again(image, "ab" * 32))
    assert not torch.equal(first(image, "ab" * 32), second(image, "ab" * 32))
    assert not torch.equal(first(image, "ab" * 32), first(image, "cd" * 32))
    plain = View().transform(preprocess)(image, "ab" * 32)
    assert torch.equal(View("flip").transform(preprocess)(image, "ab" * 32), plain.flip(-1))
    assert View().identity() is None  # the plain view keeps the cache key of earlier versions
    with pytest.raises(ValueError):
        View("augmented").transform(preprocess)


@pytest.mark.slow
def test_train_with_augmented_views(shapes_split: Path, tmp_path: Path):
    args = ["train", shapes_split, "--augment-views", "2", *TRAIN_ARGS]
    first = invoke(*args, "--out", tmp_path / "first")
    assert first.exit_code == 0, first.output
    assert "training on 96 feature vectors" in first.stderr  # 32 training images, each plus 2 augmented versions
    config = json.loads((tmp_path / "first" / "config.json").read_text())
    assert config["training"]["augment_views"] == 2
    again = invoke(*args, "--out", tmp_path / "again")
    again_metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again_metrics["timing"]["features_computed"] == 0  # the augmented views came from the cache too
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["val_loss"] == \
        json.loads((tmp_path / "first" / "metrics.json").read_text())["val_loss"]


@pytest.mark.slow
def test_tta_averages_each_image_with_its_mirror(run: Path, tmp_path: Path):
    image = shape_image("square", 7)
    image.save(tmp_path / "image.png")
    ImageOps.mirror(image).save(tmp_path / "mirror.png")

    def probabilities(*args) -> list[list[float]]:
        rows = json.loads(invoke("predict", run, *args, "--format", "json", "--top-k", "2").stdout)
        return [[p for _, p in sorted(row["top"])] for row in rows]

    plain, mirrored = probabilities(tmp_path / "image.png", tmp_path / "mirror.png")
    (tta,) = probabilities(tmp_path / "image.png", "--tta")
    assert tta == pytest.approx([(a + b) / 2 for a, b in zip(plain, mirrored)], abs=1e-3)
    assert plain != pytest.approx(mirrored, abs=1e-6)  # the mirror really is a different input
