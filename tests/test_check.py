"""`vistrain check` on generated images with planted exact and near duplicates, corrupt files and conflicts."""

from __future__ import annotations

import builtins
import csv
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import ImageEnhance

from conftest import invoke, shape_image
from vistrain.data.check import check_dataset


def planted(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for split, n in (("train", 6), ("val", 3)):
        for c, kind in enumerate(("circle", "square")):
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(n):
                shape_image(kind, seed=1000 * c + (0 if split == "train" else 100) + i).save(folder / f"{i}.png")
    # exact duplicate across splits (leakage), same label
    shutil.copy(root / "train" / "circle" / "0.png", root / "val" / "circle" / "leak.png")
    # near duplicate within train: the same picture, slightly brighter, re-encoded as JPEG
    original = shape_image("square", seed=1001)
    ImageEnhance.Brightness(original).enhance(1.05).save(root / "train" / "square" / "near.jpg", quality=90)
    # the same image under two classes
    shutil.copy(root / "train" / "square" / "2.png", root / "train" / "circle" / "conflict.png")
    # unreadable files
    (root / "train" / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "val" / "square" / "empty.png").write_bytes(b"")
    return root


def test_finds_every_planted_problem(tmp_path: Path):
    result = check_dataset(planted(tmp_path), threshold=4)
    assert result.counts == {"train": {"circle": 7, "square": 7}, "val": {"circle": 4, "square": 3}}
    assert {s.path.name for s in result.unreadable} == {"broken.jpg", "empty.png"}
    exact = {(p.a.path.name, p.b.path.name, p.where) for p in result.pairs if p.kind == "exact"}
    assert ("0.png", "leak.png", "across train/val") in exact
    assert any({"conflict.png", "2.png"} == {a, b} and "conflicting labels" in where for a, b, where in exact)
    near = [p for p in result.pairs if p.kind == "near"]
    assert any({p.a.path.name, p.b.path.name} == {"1.png", "near.jpg"} for p in near)
    assert len(result.leaks()) >= 1 and len(result.conflicts()) >= 1


def test_each_file_is_read_from_the_disk_once(tmp_path: Path, monkeypatch):
    data = planted(tmp_path)
    opened = Counter()
    for module, name in ((os, "open"), (builtins, "open")):
        original = getattr(module, name)

        def counting(path, *args, _original=original, **kwargs):
            if isinstance(path, (str, Path)) and Path(path).is_relative_to(data):
                opened[Path(path)] += 1
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    result = check_dataset(data)
    assert len(result.records) == 21 and len(opened) == 23  # every file: 21 images and 2 unreadable ones
    assert set(opened.values()) == {1}, opened


def test_the_threshold_bounds_the_hash_distance(tmp_path: Path):
    data = planted(tmp_path)
    strict, loose = check_dataset(data, threshold=0), check_dataset(data, threshold=20)
    assert all(p.distance == 0 for p in strict.pairs)
    assert len(loose.pairs) > len(strict.pairs) and max(p.distance for p in loose.pairs) <= 20


def test_check_command_prints_a_summary_and_writes_csvs(tmp_path: Path):
    data = planted(tmp_path)
    result = invoke("check", data, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    unreadable, duplicates = (list(csv.DictReader(open(tmp_path / "report" / name, newline="")))
                              for name in ("unreadable.csv", "duplicates.csv"))
    leaks = [row for row in duplicates if row["split_a"] != row["split_b"]]
    assert len(unreadable) == 2 and len(leaks) == 1 and {row["kind"] for row in duplicates} == {"exact", "near"}
    assert f"unreadable files: {len(unreadable)}" in result.stdout  # the summary says the same
    assert f"{len(leaks)} across splits (leakage)" in result.stdout
    assert (tmp_path / "report" / "images.csv").read_text().count("\n") == 1 + 21


@pytest.mark.slow
def test_train_warns_about_exact_duplicates_across_splits(tmp_path: Path):
    data = planted(tmp_path)
    result = invoke("train", data, "--out", tmp_path / "run", "--epochs", "1")
    assert result.exit_code == 0
    assert "in both training and validation" in result.stderr and "leak.png" in result.stderr


def test_near_pairs_are_found_across_tiles_and_never_twice():
    from vistrain.data.check import Record, near_pairs

    hashes = [0b0, 0xFFFF, 0b1, 0xFFFF0000, 0xFFFE, 0b11]  # near: (0,2) (0,5) (2,5) (1,4); 3 is alone
    records = [Record(Path(f"{i}.png"), "train", "x", str(i), h, 8, 8) for i, h in enumerate(hashes)]
    expected = sorted(near_pairs(records, threshold=2, chunk=len(hashes)))
    assert [(i, j) for i, j, _ in expected] == [(0, 2), (0, 5), (1, 4), (2, 5)]
    for chunk in (1, 2, 4):
        assert sorted(near_pairs(records, threshold=2, chunk=chunk)) == expected
