"""Find the labelled images in a data folder and split them into training and validation sets.

Two layouts are understood:

* ``DATA/train/<class>/...`` with ``DATA/val/<class>/...`` (or ``validation/``);
* ``DATA/<class>/...``, split by a seeded, stratified validation fraction.

Class ids are the sorted class-folder names. Files are not opened here: whether a file is an image is
decided by its content when it is decoded, and a file that is not is reported as skipped there.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

VAL_DIR_NAMES = ("val", "validation")


class DataError(ValueError):
    """The data folder cannot be used; the message names the folders at fault."""


@dataclass(frozen=True)
class Sample:
    """One labelled image file."""

    path: Path
    label: int


@dataclass(frozen=True)
class Skipped:
    """A file that was left out, and why."""

    path: Path
    reason: str


@dataclass
class Dataset:
    """Training and validation samples with their class names (index = class id)."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    layout: str
    skipped: list[Skipped] = field(default_factory=list)


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def list_files(folder: Path) -> list[Path]:
    """Every non-hidden file below `folder` (hidden folders are not entered), sorted."""
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(Path(root) / name for name in names if not name.startswith("."))
    return sorted(files)


def read_class_folders(root: Path, label_depth: int | None = None) -> tuple[dict[str, list[Path]], list[Skipped]]:
    """Map each class folder of `root` to its files; files lying directly in `root` are skipped.

    By default the top-level folders are the classes (files in their sub-folders included); with
    `label_depth` K, the folders K levels down are (see `vistrain split --label-depth`).
    """
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    entries = sorted(p for p in root.iterdir() if not is_hidden(p))
    if label_depth is None:
        folders = {p.name: list_files(p) for p in entries if p.is_dir()}
        loose = [Skipped(p, "not inside a class folder") for p in entries if p.is_file()]
    else:
        from vistrain.organise import label_class_tree

        labelled = label_class_tree(root, label_depth)
        folders, loose = labelled.files, labelled.skipped
    if not folders:
        hint = " (a flat folder of files named like cat.1.jpg? run `vistrain split` first)" if loose else ""
        raise DataError(f"{root} has no class folders{hint}")
    empty = [str(root / name) for name, files in folders.items() if not files]
    if empty:
        raise DataError("empty class folder(s): " + ", ".join(empty))
    return folders, loose


def _samples(folders: dict[str, list[Path]], classes: list[str]) -> list[Sample]:
    index = {name: i for i, name in enumerate(classes)}
    return [Sample(path, index[name]) for name, files in sorted(folders.items()) for path in files]


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split each class separately, so both parts keep the class proportions; the same seed gives the same split."""
    if not 0 < val_fraction < 1:
        raise DataError(f"the validation fraction must be between 0 and 1, not {val_fraction}")
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted({s.label for s in samples}):
        members = [s for s in samples if s.label == label]
        rng.shuffle(members)
        # at least one image on each side whenever the class has two or more
        n_val = min(max(round(len(members) * val_fraction), 1), len(members) - 1) if len(members) > 1 else 0
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return sorted(train, key=lambda s: s.path), sorted(val, key=lambda s: s.path)


def find_split_dirs(root: Path) -> tuple[Path, Path | None]:
    """(train folder, validation folder or None) when `root` uses the train/val layout, else (root, None)."""
    train = root / "train"
    if train.is_dir():
        val = next((root / name for name in VAL_DIR_NAMES if (root / name).is_dir()), None)
        return train, val
    return root, None


def load_dataset(root: str | Path, val_fraction: float = 0.2, seed: int = 0, label_depth: int | None = None) -> Dataset:
    """Discover classes and samples under `root`, splitting off a validation set when there is none."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root} does not exist")
    train_dir, val_dir = find_split_dirs(root)
    train_folders, skipped = read_class_folders(train_dir, label_depth)
    classes = sorted(train_folders)
    if len(classes) < 2:
        raise DataError(f"{train_dir} has a single class folder ({classes[0]}); a classifier needs at least two")
    if val_dir is None:
        train, val = stratified_split(_samples(train_folders, classes), val_fraction, seed)
        layout = f"class folders in {train_dir}, {val_fraction:.0%} split off for validation (seed {seed})"
        return Dataset(classes, train, val, layout, skipped)
    val_folders, val_loose = read_class_folders(val_dir, label_depth)
    if sorted(val_folders) != classes:
        only_train = sorted(set(classes) - set(val_folders))
        only_val = sorted(set(val_folders) - set(classes))
        raise DataError(
            f"{train_dir} and {val_dir} have different classes: "
            f"only in {train_dir.name}/: {only_train or 'none'}; only in {val_dir.name}/: {only_val or 'none'}"
        )
    layout = f"{train_dir} for training, {val_dir} for validation"
    return Dataset(classes, _samples(train_folders, classes), _samples(val_folders, classes), layout, skipped + val_loose)


def load_labelled_folder(root: str | Path, classes: list[str]) -> tuple[list[Sample], list[Skipped]]:
    """Samples of a folder to evaluate against known `classes`: its validation split if it has one, else all."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root} does not exist")
    train_dir, val_dir = find_split_dirs(root)
    folders, skipped = read_class_folders(val_dir or train_dir)
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DataError(f"{val_dir or train_dir} has classes the model does not know: {unknown}; it knows {classes}")
    return _samples(folders, classes), skipped
