"""`vistrain split`: turn a flat folder, a tree of class folders, a CSV list or an SVHN .mat into train/val(/test)
folders.

Originals are never moved, replaced or deleted: files are hard-linked (default), copied or symlinked into
DEST/<split>/<class>/, which may be neither inside the source nor around it; a re-split into the same DEST
takes back only what the earlier split placed (`vistrain.data.placement`). The images of an SVHN .mat are
vistrain's own PNGs in its cache (`vistrain.data.matlab`), so they are always copied.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from vistrain.data.decisions import Decisions, apply_to_files
from vistrain.data.folders import DEFAULT_PATTERN, Labelled, data_folder, label_flat_folder, read_class_folders
from vistrain.data.labels_csv import parse_targets, read_label_csv
from vistrain.data.listing import is_hidden, list_files, resolves_inside
from vistrain.data.matlab import is_mat
from vistrain.data.placement import (LINK_MODES, SPLITS, Placed, identify, place, planned, prune, take_back,
                                     unique_name, write_manifest)
from vistrain.data.samples import DataError, Skipped
from vistrain.data.splits import assign_splits


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
                 image_root: Path | None = None, cache_dir: Path | None = None) -> Labelled:
    """Pick the reader by what SOURCE is: a CSV file, an SVHN .mat, a folder of class folders, or a flat folder."""
    if is_csv(source):
        return label_csv(source, image_root)
    folder, converted = data_folder(source, cache_dir)
    if converted:
        labelled = read_class_folders(folder)
        return Labelled(labelled.files, labelled.skipped, f"{converted}; {labelled.source}")
    if not source.is_dir():
        raise DataError(f"{source} is neither a folder nor a .csv or .mat file")
    if any(p.is_dir() and not p.is_symlink() and not is_hidden(p.name) for p in source.iterdir()):
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


def write_splits(splits: dict[str, dict[str, list[Path]]], destination: Path, mode: str = "hardlink",
                 force: bool = False, inputs: set[tuple[int, int]] = frozenset()
                 ) -> tuple[dict[str, dict[str, list[Path]]], list[Skipped]]:
    """Lay the files out as DEST/<split>/<class>/<unique name> (`vistrain.data.placement`); a non-empty DEST needs
    `force`, and then the files of an earlier split are taken back first, so DEST holds exactly this split.
    `inputs`: the (st_dev, st_ino) of every input, whose last link is never removed. Returns the files written,
    as {split: {class: [file in DEST]}}, and the files that could not be placed, with the reason."""
    if mode not in LINK_MODES:
        raise DataError(f"unknown link mode {mode!r}; choose one of {', '.join(LINK_MODES)}")
    if destination.exists() and any(destination.iterdir()) and not force:
        raise DataError(f"{destination} is not empty; choose another destination or pass --force")
    dest = destination.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    take_back(dest, inputs)
    plan, skipped = plan_splits(splits, dest, mode)
    write_manifest(dest, [entry for _, _, entry in plan])  # before placing: an interrupted split can be cleaned
    written: dict[str, dict[str, list[Path]]] = {split: {label: [] for label in classes}
                                                 for split, classes in splits.items()}
    placed = []
    for source, label, entry in plan:
        try:
            placed.append(place(source, dest, entry))
            written[entry.path.split("/")[0]][label].append(destination / entry.path)
        except OSError as error:
            skipped.append(Skipped(source, f"not placed: {error.strerror or error}"))
            prune(dest, entry.path)
    write_manifest(dest, placed)
    return written, skipped


def plan_splits(splits: dict[str, dict[str, list[Path]]], dest: Path,
                mode: str) -> tuple[list[tuple[Path, str, Placed]], list[Skipped]]:
    """(source, class, manifest entry) of every file to place, each under a name nothing in its folder holds, and
    the files that cannot be placed: not a regular file, over the size limit, unreadable, inside DEST."""
    plan, skipped = [], []
    for split, classes in splits.items():
        for label, paths in classes.items():
            folder = label.replace("/", "-")
            if folder.startswith(".") or "\0" in folder:
                skipped += [Skipped(path, f"class {label!r} cannot name a folder") for path in paths]
                continue
            existing = dest / split / folder
            if (dest / split).is_symlink() or existing.is_symlink():
                raise DataError(f"{dest / split} or {existing} is a link: split writes only in DEST's own folders; "
                                "remove the link or choose another DEST")
            taken = {p.name.casefold() for p in existing.iterdir()} if existing.is_dir() else set()
            for path in paths:
                if resolves_inside(path, dest):
                    skipped.append(Skipped(path, f"not placed: it lies inside {dest}"))
                    continue
                try:
                    info = identify(path)
                except OSError as error:
                    skipped.append(Skipped(path, f"not placed: {error.strerror or error}"))
                    continue
                name = unique_name(path, taken)
                taken.add(name.casefold())
                plan.append((path, label, planned(f"{split}/{folder}/{name}", path, info, mode)))
    return plan, skipped


def inodes(paths: list[Path]) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of the files that exist among `paths`, links followed."""
    found = set()
    for path in paths:
        try:
            info = os.stat(path)
            found.add((info.st_dev, info.st_ino))
        except (OSError, ValueError):
            continue
    return found


def left_alone(destination: Path, written: dict[str, dict[str, list[Path]]]) -> list[Path]:
    """Files in DEST's split folders that this split did not place: the user's own, or an earlier split's that
    changed since it placed them."""
    ours = {path for classes in written.values() for paths in classes.values() for path in paths}
    found = [path for split in SPLITS if (destination / split).is_dir() for path in list_files(destination / split)[0]]
    return [path for path in found if path not in ours]


@dataclass
class SplitResult:
    source: str  # how the labels were found
    mode: str  # how the files got into DEST (see `LINK_MODES`)
    written: dict[str, dict[str, list[Path]]]  # split -> class -> the files written in DEST
    skipped: list[Skipped]  # files of SOURCE that could not be labelled or placed
    left_alone: list[Path]  # files in DEST's split folders that this split did not place (see `left_alone`)


def split_dataset(source: Path, destination: Path, val_fraction: float = 0.2, test_fraction: float = 0.0,
                  seed: int = 0, per_class: int | None = None, pattern: str = DEFAULT_PATTERN, label_depth: int = 1,
                  image_root: Path | None = None, mode: str = "hardlink", force: bool = False,
                  decisions: Path | None = None, cache_dir: Path | None = None) -> SplitResult:
    """`vistrain split`: label SOURCE (`label_source`), honour the review decisions (the file `decisions`, else the
    one beside SOURCE: the cleaned dataset as a new tree), split it (`split_files`) and write DEST (`write_splits`; an
    SVHN .mat's images, converted in `cache_dir`, are copied). Never changes a byte of its sources
    (`refuse_nesting`, and `write_splits` keeps every input's last link)."""
    refuse_nesting(source_root(source, image_root), destination)
    labelled = label_source(source, pattern, label_depth, image_root, cache_dir)
    mode = "copy" if is_mat(source) else mode
    files, excluded = apply_to_files(labelled.files, Decisions.resolve(decisions, source))
    if len(files) < 2:
        raise DataError(f"{source}: found {len(files)} class(es) ({labelled.source}); need at least two")
    splits = split_files(files, val_fraction, test_fraction, seed, per_class)
    inputs = inodes([source, *(path for paths in labelled.files.values() for path in paths)])  # excluded ones too
    written, not_placed = write_splits(splits, destination, mode, force, inputs)
    return SplitResult(labelled.source, mode, written, labelled.skipped + excluded + not_placed,
                       left_alone(destination, written))
