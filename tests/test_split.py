"""`vistrain split`: flat Kaggle-style folders, nested class trees and CSV lists into train/val(/test).

Every split here runs under `sources_unchanged`: its sources come out byte for byte as they went in.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import invoke, shape_image
from vistrain.data.datasets import load_dataset
from vistrain.data.folders import label_class_tree, label_flat_folder
from vistrain.data.organise import split_dataset

pytestmark = pytest.mark.usefixtures("sources_unchanged")


def write(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape_image("circle", seed, size=32).save(path, format="PNG")
    return path


def counts(root: Path) -> dict[tuple[str, str], int]:
    return dict(Counter((p.parent.parent.name, p.parent.name) for p in root.glob("*/*/*")))


def placed(root: Path) -> list[str]:
    """Every file in DEST's split folders, as split/class/name."""
    return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*/*"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contents(root: Path, leave_out: tuple[Path, ...] = ()) -> list[tuple[str, str, str]]:
    """Every file in DEST's split folders as (split, class, SHA-256 of its bytes), whatever its name."""
    return sorted((p.parent.parent.name, p.parent.name, digest(p)) for p in root.glob("*/*/*") if p not in leave_out)


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    folder = tmp_path / "flat"
    for i in range(20):
        write(folder / f"cat.{i}.jpg", i)
        write(folder / f"dog_{i}.png", 100 + i)
    write(folder / "README")  # no label in its name
    return folder


def test_flat_folder_is_split_stratified_with_hard_links(flat: Path, tmp_path: Path):
    result = invoke("split", flat, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert counts(tmp_path / "out") == {("train", "cat"): 16, ("val", "cat"): 4, ("train", "dog"): 16,
                                        ("val", "dog"): 4}
    linked = next((tmp_path / "out" / "train" / "cat").iterdir())
    assert os.stat(linked).st_nlink == 2  # a hard link, the original untouched
    assert (flat / linked.name).exists()
    assert "README" in result.stderr and "does not match" in result.stderr
    assert load_dataset(tmp_path / "out").classes == ["cat", "dog"]


def test_test_split_per_class_sample_and_seed(flat: Path, tmp_path: Path):
    invoke("split", flat, tmp_path / "a", "--test-fraction", "0.2", "--per-class", "10", "--seed", "5")
    invoke("split", flat, tmp_path / "b", "--test-fraction", "0.2", "--per-class", "10", "--seed", "5")
    assert counts(tmp_path / "a") == {(s, c): n for c in ("cat", "dog") for s, n in
                                      (("train", 6), ("val", 2), ("test", 2))}
    names = lambda root: sorted(p.relative_to(root).as_posix() for p in root.glob("*/*/*"))  # noqa: E731
    assert names(tmp_path / "a") == names(tmp_path / "b")


def test_copy_and_symlink_modes(flat: Path, tmp_path: Path):
    invoke("split", flat, tmp_path / "copied", "--copy")
    invoke("split", flat, tmp_path / "linked", "--symlink")
    copied = next((tmp_path / "copied" / "train" / "cat").iterdir())
    linked = next((tmp_path / "linked" / "train" / "cat").iterdir())
    assert os.stat(copied).st_nlink == 1 and not copied.is_symlink()
    assert linked.is_symlink() and linked.resolve().parent == flat.resolve()


def test_refuses_a_non_empty_destination_unless_forced(flat: Path, tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    refused = invoke("split", flat, tmp_path / "out")
    assert refused.exit_code == 1 and "--force" in refused.stderr
    forced = invoke("split", flat, tmp_path / "out", "--force")
    assert forced.exit_code == 0 and (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_a_forced_re_split_holds_exactly_the_new_split(flat: Path, tmp_path: Path):
    """--force into an earlier split takes back what that split placed (listed in DEST/.vistrain-split.json), so
    DEST holds exactly the new assignment: no image in both train and val, no test/ left over. Files vistrain did
    not place, or that changed since, are left alone and named."""
    out = tmp_path / "out"
    assert invoke("split", flat, out, "--copy", "--seed", "0", "--test-fraction", "0.2").exit_code == 0
    assert (out / "test").is_dir() and (out / ".vistrain-split.json").is_file()
    replaced = next((out / "train" / "cat").iterdir())
    replaced.unlink()
    replaced.write_bytes(b"the user's own file, where vistrain had placed one")
    (out / "train" / "cat" / "mine.txt").write_text("mine")
    again = invoke("split", flat, out, "--seed", "1", "--force")
    assert again.exit_code == 0, again.output
    assert invoke("split", flat, tmp_path / "fresh", "--seed", "1").exit_code == 0
    theirs = (replaced, out / "train" / "cat" / "mine.txt")
    assert contents(out, leave_out=theirs) == contents(tmp_path / "fresh") and not (out / "test").exists()
    assert replaced.read_bytes().startswith(b"the user's own") and (out / "train" / "cat" / "mine.txt").is_file()
    assert "left alone" in again.stderr and "mine.txt" in again.stderr
    assert load_dataset(out).classes == ["cat", "dog"]


def test_colliding_names_get_distinct_names_and_the_counts_are_the_files_written(tmp_path: Path):
    """a/img/1.jpg ... e/img/1.jpg of one class all map to `1.jpg`: each gets its own name (parent folders in
    front), and the table counts the files actually in DEST."""
    src = tmp_path / "src"
    rows = [f"{folder}/img/1.jpg,x" for folder in "abcde"] + [f"other/{i}.png,y" for i in range(5)]
    for i, row in enumerate(rows):
        write(src / row.split(",")[0], i)
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    result = invoke("split", src / "labels.csv", tmp_path / "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert counts(out) == {("train", "x"): 4, ("val", "x"): 1, ("train", "y"): 4, ("val", "y"): 1}
    assert re.search(r"x\s*│\s*4\s*│\s*1\s*│", result.stdout)
    assert re.search(r"total\s*│\s*8\s*│\s*2\s*│", result.stdout)
    assert sorted(map(digest, out.glob("*/x/*"))) == sorted(digest(src / r.split(",")[0]) for r in rows[:5])
    again = split_dataset(src / "labels.csv", tmp_path / "again")
    assert placed(tmp_path / "again") == placed(out)  # deterministic names
    assert sum(len(files) for classes in again.written.values() for files in classes.values()) == 10


def test_custom_pattern_needs_a_label_group(flat: Path, tmp_path: Path):
    bad = invoke("split", flat, tmp_path / "out", "--pattern", "^[a-z]+")
    assert bad.exit_code == 1 and "named group" in bad.stderr
    labelled = label_flat_folder(flat, r"^(?P<label>cat|dog)")
    assert set(labelled.files) == {"cat", "dog"}


def test_nested_tree_uses_the_label_depth_and_names_clashes_by_path(tmp_path: Path):
    root = tmp_path / "animals"
    for i in range(3):
        write(root / "domestic" / "cat" / f"{i}.png", i)
        write(root / "domestic" / "dog" / f"{i}.png", 10 + i)
        write(root / "wild" / "cat" / f"{i}.png", 20 + i)
        write(root / "wild" / "wolf" / f"{i}.png", 30 + i)
    assert sorted(label_class_tree(root).files) == ["domestic", "wild"]  # the top-level folders, as `train`
    assert sorted(label_class_tree(root, label_depth=2).files) == ["dog", "domestic-cat", "wild-cat", "wolf"]
    result = invoke("split", root, tmp_path / "out", "--val-fraction", "0.34", "--label-depth", "2")
    assert result.exit_code == 0
    assert {c for _, c in counts(tmp_path / "out")} == {"dog", "domestic-cat", "wild-cat", "wolf"}
    trained_classes = load_dataset(root, label_depth=2).classes
    assert trained_classes == sorted({c for _, c in counts(tmp_path / "out")})  # split and train name them alike


def test_split_then_train_agree_on_tiny_classes(tmp_path: Path):
    """One split policy: a class of 2 images gives 1 to validation in `split` as in `train`, the same images for
    the same seed, so `split` then `train` never stops with different classes."""
    root = tmp_path / "data"
    for i in range(2):
        write(root / "rare" / f"r{i}.png", i)
    for i in range(9):
        write(root / "common" / f"c{i}.png", 10 + i)
    result = invoke("split", root, tmp_path / "out", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert counts(tmp_path / "out") == {("train", "rare"): 1, ("val", "rare"): 1, ("train", "common"): 7,
                                        ("val", "common"): 2}
    after_split = load_dataset(tmp_path / "out")  # the train/val layout: no further split
    assert after_split.classes == ["common", "rare"]
    direct = load_dataset(root, seed=3)  # train's own split of the same folders
    assert sorted(s.path.name for s in direct.val) == sorted(s.path.name for s in after_split.val)


def test_csv_list_with_bad_rows_reported_by_line(tmp_path: Path):
    src = tmp_path / "src"
    for i in range(5):
        write(src / "img" / f"a{i}.png", i)
        write(src / "img" / f"b{i}.png", 10 + i)
    rows = ["path,label"] + [f"img/a{i}.png,ants" for i in range(5)] + [f"img/b{i}.png,bees" for i in range(5)]
    rows += ["img/missing.png,ants", "img/a0.png,"]
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    result = invoke("split", src / "labels.csv", tmp_path / "out")
    assert result.exit_code == 0
    assert counts(tmp_path / "out") == {("train", "ants"): 4, ("val", "ants"): 1, ("train", "bees"): 4,
                                        ("val", "bees"): 1}
    assert "labels.csv line 12: no such file" in result.stderr and "labels.csv line 13: empty label" in result.stderr
