"""The feature cache: computed once per image content, reused across names and runs, keyed by preprocessing."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from conftest import shape_image
from vistrain.backbones import get_backbone
from vistrain.features import FeatureCache, extract_features

LITE0 = get_backbone("efficientnet_lite0")


def images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i}.png" for i in range(n)]
    for i, path in enumerate(paths):
        shape_image("circle", seed=i).save(path)
    return paths


def test_second_extraction_reads_the_cache(tmp_path: Path):
    paths = images(tmp_path / "img", 3)
    first = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    second = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    assert (first.computed, second.computed) == (3, 0)
    assert first.vectors.shape == (3, LITE0.feature_dim)
    np.testing.assert_array_equal(first.vectors, second.vectors)


def test_cache_follows_content_not_names(tmp_path: Path):
    paths = images(tmp_path / "img", 2)
    extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    renamed = tmp_path / "renamed.png"
    shutil.copy(paths[0], renamed)
    shape_image("square", seed=99).save(paths[1])  # same name, new content
    again = extract_features([renamed, paths[1]], LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    assert again.computed == 1


def test_other_preprocessing_has_its_own_cache(tmp_path: Path):
    paths = images(tmp_path / "img", 1)
    other = dataclasses.replace(LITE0.preprocess, crop_pct=1.0)
    a = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    b = extract_features(paths, LITE0, other, tmp_path / "cache", show_progress=False)
    assert b.computed == 1
    assert not np.allclose(a.vectors, b.vectors)
    assert FeatureCache(tmp_path / "cache", LITE0, other).path != FeatureCache(tmp_path / "cache", LITE0, LITE0.preprocess).path


def test_unreadable_files_are_skipped_with_reasons(tmp_path: Path):
    good = images(tmp_path / "img", 2)
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [good[0], tmp_path / "text.jpg", tmp_path / "missing.jpg", tmp_path / "empty.png", good[1]]
    result = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    assert result.kept == [0, 4]
    assert result.vectors.shape == (2, LITE0.feature_dim)
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert set(reasons) == {"text.jpg", "missing.jpg", "empty.png"}
    assert "not an image" in reasons["text.jpg"] and "empty" in reasons["empty.png"]
    assert "No such file" in reasons["missing.jpg"]
