"""Folder layouts, the seeded stratified split, and clear errors for unusable folders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from vistrain.data.datasets import load_dataset, load_labelled
from vistrain.data.samples import DataError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def class_folders(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        for i in range(n):
            touch(root / name / f"{i}.jpg")
    return root


def test_train_and_val_folders_are_used_as_they_are(tmp_path: Path):
    class_folders(tmp_path / "train", {"dog": 3, "cat": 2})
    class_folders(tmp_path / "validation", {"dog": 1, "cat": 1})
    dataset = load_dataset(tmp_path)
    assert dataset.classes == ["cat", "dog"]  # sorted folder names = class ids
    assert Counter(s.target for s in dataset.train) == {0: 2, 1: 3}
    assert len(dataset.val) == 2
    assert all("validation" in str(s.path) for s in dataset.val)


def test_class_folders_are_split_stratified_and_seeded(tmp_path: Path):
    class_folders(tmp_path, {"a": 50, "b": 10})
    dataset = load_dataset(tmp_path, val_fraction=0.2, seed=3)
    assert Counter(s.target for s in dataset.val) == {0: 10, 1: 2}
    assert Counter(s.target for s in dataset.train) == {0: 40, 1: 8}
    assert not {s.path for s in dataset.val} & {s.path for s in dataset.train}
    again = load_dataset(tmp_path, val_fraction=0.2, seed=3)
    other = load_dataset(tmp_path, val_fraction=0.2, seed=4)
    assert again.val == dataset.val
    assert other.val != dataset.val


def test_small_classes_keep_an_image_on_each_side(tmp_path: Path):
    class_folders(tmp_path, {"a": 2, "b": 30})
    dataset = load_dataset(tmp_path, val_fraction=0.1)
    assert Counter(s.target for s in dataset.val)[0] == 1
    assert Counter(s.target for s in dataset.train)[0] == 1


def test_hidden_files_are_ignored_and_loose_files_reported(tmp_path: Path):
    class_folders(tmp_path, {"a": 3, "b": 3})
    touch(tmp_path / "a" / ".DS_Store")
    touch(tmp_path / ".hidden" / "x.jpg")
    touch(tmp_path / "a" / "nested" / "deep.jpg")
    touch(tmp_path / "stray.jpg")
    dataset = load_dataset(tmp_path)
    paths = {s.path.name for s in dataset.train + dataset.val}
    assert ".DS_Store" not in paths and "x.jpg" not in paths
    assert "deep.jpg" in paths  # images in subfolders belong to the class folder
    assert [(s.path.name, s.reason) for s in dataset.skipped] == [("stray.jpg", "not inside a class folder")]


def test_empty_class_folder_is_named(tmp_path: Path):
    class_folders(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty class folder.*empty"):
        load_dataset(tmp_path)


def test_single_class_is_refused(tmp_path: Path):
    class_folders(tmp_path, {"only": 3})
    with pytest.raises(DataError, match="single class folder.*only"):
        load_dataset(tmp_path)


def test_train_and_val_with_different_classes_are_named(tmp_path: Path):
    class_folders(tmp_path / "train", {"cat": 2, "dog": 2})
    class_folders(tmp_path / "val", {"cat": 1, "bird": 1})
    with pytest.raises(DataError, match=r"only in train/: \['dog'\]; only in val/: \['bird'\]"):
        load_dataset(tmp_path)


def test_flat_folder_points_to_split(tmp_path: Path):
    touch(tmp_path / "cat.1.jpg")
    with pytest.raises(DataError, match="vistrain split"):
        load_dataset(tmp_path)


def test_missing_folder(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")


def test_evaluation_folder_uses_val_and_rejects_unknown_classes(tmp_path: Path):
    class_folders(tmp_path / "train", {"cat": 2, "dog": 2})
    class_folders(tmp_path / "val", {"cat": 1})
    samples, _ = load_labelled(tmp_path, ["cat", "dog"], "binary")
    assert [s.path.parent.parent.name for s in samples] == ["val"]
    assert [s.target for s in samples] == [0]
    with pytest.raises(DataError, match="does not know.*cat"):
        load_labelled(tmp_path, ["dog", "fox"], "binary")


def test_label_depth_picks_the_folder_level_of_nested_trees(tmp_path: Path):
    for group, leaf in (("domestic", "cat"), ("domestic", "dog"), ("wild", "wolf"), ("wild", "fox")):
        class_folders(tmp_path / group, {leaf: 5})
    assert load_dataset(tmp_path).classes == ["domestic", "wild"]
    assert load_dataset(tmp_path, label_depth=2).classes == ["cat", "dog", "fox", "wolf"]
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(tmp_path / "wild" / "fox", label_depth=1)
