"""`vistrain split`: turn a flat folder, a tree of class folders or a CSV list into train/val(/test) folders.

Originals are never moved or deleted: files are hard-linked (default), copied or symlinked into
DEST/<split>/<class>/.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from vistrain.data import DataError, Skipped, is_hidden, list_files

DEFAULT_PATTERN = r"^(?P<label>[A-Za-z]+)[._-]"  # cat.1.jpg, dog_12.png, bird-3.gif -> cat, dog, bird
LINK_MODES = ("hardlink", "copy", "symlink")


@dataclass
class Labelled:
    """Files per class found in a source, and files that could not be labelled."""

    files: dict[str, list[Path]]
    skipped: list[Skipped]
    source: str


def label_flat_folder(folder: Path, pattern: str = DEFAULT_PATTERN) -> Labelled:
    """Label each file of a flat folder by the regex group `label` matched at the start of its name."""
    regex = re.compile(pattern)
    if "label" not in regex.groupindex:
        raise DataError(f"--pattern {pattern!r} needs a named group (?P<label>...)")
    files: dict[str, list[Path]] = defaultdict(list)
    skipped = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not is_hidden(p)):
        match = regex.match(path.name)
        if match and match.group("label"):
            files[match.group("label")].append(path)
        else:
            skipped.append(Skipped(path, f"name does not match the pattern {pattern!r}"))
    return Labelled(dict(files), skipped, f"flat folder {folder}, labels from file names")


def label_class_tree(folder: Path, label_depth: int | None = None) -> Labelled:
    """Label each file by its folder: the leaf folder (default) or the folder `label_depth` levels down.

    Where two different folders would give the same class name, both are named by their path (domestic/cat).
    """
    by_folder: dict[tuple[str, ...], list[Path]] = defaultdict(list)
    skipped = []
    for path in list_files(folder):
        parts = path.relative_to(folder).parts[:-1]
        if not parts or (label_depth is not None and len(parts) < label_depth):
            skipped.append(Skipped(path, "not inside a class folder" if not parts
                                   else f"less than {label_depth} folder level(s) deep"))
            continue
        by_folder[parts if label_depth is None else parts[:label_depth]].append(path)
    names = Counter(key[-1] for key in by_folder)
    files = {("/".join(key) if names[key[-1]] > 1 else key[-1]): paths for key, paths in by_folder.items()}
    depth = "leaf folders" if label_depth is None else f"folders {label_depth} level(s) down"
    return Labelled(files, skipped, f"class folders in {folder} ({depth})")


def label_csv(csv_path: Path, image_root: Path | None = None) -> Labelled:
    """Label files from a CSV of `path,label` rows (see `vistrain.labels_csv`); paths are relative to
    `image_root`, by default the CSV's folder."""
    from vistrain.labels_csv import parse_targets, read_label_csv

    table = read_label_csv(csv_path, image_root)
    rows, labels, bad = parse_targets(table, "classes")
    files: dict[str, list[Path]] = defaultdict(list)
    for row, label in zip(rows, labels):
        files[label].append(row.path)
    return Labelled(dict(files), table.skipped + bad, f"CSV list {csv_path}")


def label_source(source: Path, pattern: str = DEFAULT_PATTERN, label_depth: int | None = None,
                 image_root: Path | None = None) -> Labelled:
    """Pick the reader by what SOURCE is: a CSV file, a folder of class folders, or a flat folder."""
    if source.is_file() and source.suffix.lower() == ".csv":
        return label_csv(source, image_root)
    if not source.is_dir():
        raise DataError(f"{source} is neither a folder nor a .csv file")
    if any(p.is_dir() and not is_hidden(p) for p in source.iterdir()):
        return label_class_tree(source, label_depth)
    return label_flat_folder(source, pattern)


def assign_splits(files: dict[str, list[Path]], val_fraction: float, test_fraction: float, seed: int,
                  per_class: int | None = None) -> dict[str, dict[str, list[Path]]]:
    """Split each class on its own (stratified), after a seeded shuffle; `per_class` keeps a random N first."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise DataError("--val-fraction and --test-fraction must be ≥ 0 and add up to less than 1")
    rng = random.Random(seed)
    splits: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}, "test": {}}
    for label in sorted(files):
        members = sorted(files[label])
        rng.shuffle(members)
        members = members[:per_class] if per_class else members
        n_test = round(len(members) * test_fraction)
        n_val = round(len(members) * val_fraction)
        splits["test"][label] = members[:n_test]
        splits["val"][label] = members[n_test : n_test + n_val]
        splits["train"][label] = members[n_test + n_val :]
    return {name: classes for name, classes in splits.items() if any(classes.values())}


def place(source: Path, target: Path, mode: str) -> None:
    """Hard-link, copy or symlink one file (hard links fall back to copies across file systems)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        target.symlink_to(source.resolve())
    elif mode == "copy":
        shutil.copy2(source, target)
    else:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def write_splits(splits: dict[str, dict[str, list[Path]]], destination: Path, mode: str = "hardlink",
                 force: bool = False) -> None:
    """Lay the files out as DEST/<split>/<class>/<file name>; a non-empty DEST needs `force`."""
    if mode not in LINK_MODES:
        raise DataError(f"unknown link mode {mode!r}; choose one of {', '.join(LINK_MODES)}")
    if destination.exists() and any(destination.iterdir()) and not force:
        raise DataError(f"{destination} is not empty; choose another destination or pass --force")
    for split, classes in splits.items():
        for label, paths in classes.items():
            folder = destination / split / label.replace("/", "-")
            used: set[str] = set()
            for path in paths:
                name = path.name if path.name not in used else f"{path.parent.name}-{path.name}"
                used.add(name)
                target = folder / name
                if target.exists() or target.is_symlink():
                    target.unlink()  # only with --force: DEST held files from an earlier split
                place(path, target, mode)
