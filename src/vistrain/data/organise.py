"""`vistrain split`: turn a flat folder, a tree of class folders or a CSV list into train/val(/test) folders.

Originals are never moved or deleted: files are hard-linked (default), copied or symlinked into
DEST/<split>/<class>/.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from vistrain.data.files import is_hidden, resolves_inside
from vistrain.data.folders import DEFAULT_PATTERN, Labelled, label_flat_folder, read_class_folders
from vistrain.data.labels_csv import parse_targets, read_label_csv
from vistrain.data.samples import DataError, Skipped
from vistrain.data.splits import assign_splits

LINK_MODES = ("hardlink", "copy", "symlink")


def label_csv(csv_path: Path, image_root: Path | None = None) -> Labelled:
    """Label files from a CSV of `path,label` rows (see `vistrain.data.labels_csv`); paths are relative to
    `image_root`, by default the CSV's folder."""
    table = read_label_csv(csv_path, image_root)
    rows, labels, bad = parse_targets(table, "classes")
    files: dict[str, list[Path]] = defaultdict(list)
    for row, label in zip(rows, labels):
        files[label].append(row.path)
    return Labelled(dict(sorted(files.items())), table.skipped + bad, f"CSV list {csv_path}")


def is_csv(source: Path) -> bool:
    return source.is_file() and source.suffix.lower() == ".csv"


def source_root(source: Path, image_root: Path | None = None) -> Path:
    """The folder SOURCE's files are in: SOURCE itself, or a CSV's image root (by default the CSV's folder)."""
    return (image_root or source.parent) if is_csv(source) else source


def refuse_nesting(root: Path, destination: Path) -> None:
    """Stop when DEST lies inside the source's folder or the other way round (links followed)."""
    if resolves_inside(destination, root.resolve()):
        raise DataError(f"{destination} is inside the source {root}: split never writes among its sources; choose "
                        "a DEST outside it (for a CSV, outside its --image-root, by default the CSV's folder)")
    if resolves_inside(root, destination.resolve()):
        raise DataError(f"the source {root} is inside {destination}: a re-split there could take back its own "
                        "sources; choose a DEST outside it")


def label_source(source: Path, pattern: str = DEFAULT_PATTERN, label_depth: int = 1,
                 image_root: Path | None = None) -> Labelled:
    """Pick the reader by what SOURCE is: a CSV file, a folder of class folders, or a flat folder."""
    if is_csv(source):
        return label_csv(source, image_root)
    if not source.is_dir():
        raise DataError(f"{source} is neither a folder nor a .csv file")
    if any(p.is_dir() and not p.is_symlink() and not is_hidden(p) for p in source.iterdir()):
        return read_class_folders(source, label_depth)
    return label_flat_folder(source, pattern)


def split_files(files: dict[str, list[Path]], val_fraction: float, test_fraction: float, seed: int,
                per_class: int | None = None) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: files}} by the one split policy (`assign_splits`, stratified by class), as `train` splits
    the same classes; `per_class` keeps a random N of each class first."""
    items = [(label, path) for label in sorted(files) for path in files[label]]
    assigned = assign_splits([label for label, _ in items], val_fraction, seed, test_fraction, per_class)
    splits: dict[str, dict[str, list[Path]]] = {name: {label: [] for label in sorted(files)}
                                                for name in ("train", "val", "test")}
    for (label, path), split in zip(items, assigned):
        if split is not None:
            splits[split][label].append(path)
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
                 force: bool = False) -> dict[str, dict[str, list[Path]]]:
    """Lay the files out as DEST/<split>/<class>/<file name>; a non-empty DEST needs `force`. Returns the files
    written, as {split: {class: [file in DEST]}}."""
    if mode not in LINK_MODES:
        raise DataError(f"unknown link mode {mode!r}; choose one of {', '.join(LINK_MODES)}")
    if destination.exists() and any(destination.iterdir()) and not force:
        raise DataError(f"{destination} is not empty; choose another destination or pass --force")
    written: dict[str, dict[str, list[Path]]] = {}
    for split, classes in splits.items():
        for label, paths in classes.items():
            folder = destination / split / label.replace("/", "-")
            written.setdefault(split, {})[label] = []
            used: set[str] = set()
            for path in paths:
                name = path.name if path.name not in used else f"{path.parent.name}-{path.name}"
                used.add(name)
                target = folder / name
                if target.exists() or target.is_symlink():
                    target.unlink()  # only with --force: DEST held files from an earlier split
                place(path, target, mode)
                written[split][label].append(target)
    return written


@dataclass
class SplitResult:
    source: str  # how the labels were found
    written: dict[str, dict[str, list[Path]]]  # split -> class -> the files written in DEST
    skipped: list[Skipped]  # files of SOURCE that could not be labelled


def split_dataset(source: Path, destination: Path, val_fraction: float = 0.2, test_fraction: float = 0.0,
                  seed: int = 0, per_class: int | None = None, pattern: str = DEFAULT_PATTERN, label_depth: int = 1,
                  image_root: Path | None = None, mode: str = "hardlink", force: bool = False) -> SplitResult:
    """`vistrain split`: label SOURCE (`label_source`), split it (`split_files`) and write DEST (`write_splits`);
    DEST may be neither inside the source nor around it (`refuse_nesting`)."""
    refuse_nesting(source_root(source, image_root), destination)
    labelled = label_source(source, pattern, label_depth, image_root)
    if len(labelled.files) < 2:
        raise DataError(f"{source}: found {len(labelled.files)} class(es) ({labelled.source}); need at least two")
    splits = split_files(labelled.files, val_fraction, test_fraction, seed, per_class)
    return SplitResult(labelled.source, write_splits(splits, destination, mode, force), labelled.skipped)
