"""Labels from folders: a tree of class folders, train/val folders, or a flat folder of Kaggle-named files.

One rule for every command: by default the top-level folders are the classes (files in their sub-folders
included); with `label_depth` K, the folders K levels down are, and where two of them share a name they are
named by their path (`domestic/cat` becomes the class `domestic-cat`). An SVHN .mat is read as the class folders it
is converted into (`data_folder`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from vistrain.data.listing import FOLDER_LINK, is_hidden, is_utf8, list_files
from vistrain.data.matlab import is_mat, svhn_folder
from vistrain.data.samples import DataError, Skipped

VAL_DIR_NAMES = ("val", "validation")
DEFAULT_PATTERN = r"^(?P<label>[A-Za-z]+)[._-]"  # cat.1.jpg, dog_12.png, bird-3.gif -> cat, dog, bird


@dataclass
class Labelled:
    """Files per class found in a source, the files that could not be labelled, and how they were found."""

    files: dict[str, list[Path]]
    skipped: list[Skipped]
    source: str


def find_split_dirs(root: Path) -> tuple[Path, Path | None]:
    """(train folder, validation folder or None) when `root` uses the train/val layout, else (root, None)."""
    train = root / "train"
    if train.is_dir():
        val = next((root / name for name in VAL_DIR_NAMES if (root / name).is_dir()), None)
        return train, val
    return root, None


def data_folder(source: Path, cache_dir: Path | None = None) -> tuple[Path, str]:
    """(the folder of class folders a data source stands for, what it was converted from): for an SVHN .mat, its
    class folders in the cache (`matlab.svhn_folder`) and "SVHN FILE: N images read"; else itself and "". The one
    place where a source converted into class folders is told apart (`train`, `evaluate`, `audit`, `split`)."""
    if not is_mat(source):
        return source, ""
    folder, count = svhn_folder(source, cache_dir)
    return folder, f"SVHN {source}: {count:,} images read"


def label_class_tree(folder: Path, label_depth: int = 1) -> Labelled:
    """Label each file by the folder `label_depth` levels below `folder` (see the module's rule); files less
    deep and links to folders (`list_files`) are skipped, and a class folder without files stops with a message
    naming it."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    by_folder: dict[tuple[str, ...], list[Path]] = defaultdict(list)
    paths, skipped = list_files(folder)
    for path in paths:
        parts = path.relative_to(folder).parts[:-1]
        if len(parts) < label_depth:
            skipped.append(Skipped(path, "not inside a class folder" if not parts
                                   else f"less than {label_depth} folder level(s) deep"))
            continue
        by_folder[parts[:label_depth]].append(path)
    if label_depth == 1:
        empty = [str(p) for p in sorted(folder.iterdir()) if p.is_dir() and not p.is_symlink() and not is_hidden(p.name)
                 and is_utf8(p.name) and (p.name,) not in by_folder]
        if empty:
            raise DataError("empty class folder(s): " + ", ".join(empty))
    names = Counter(key[-1] for key in by_folder)
    files = {("-".join(key) if names[key[-1]] > 1 else key[-1]): paths for key, paths in by_folder.items()}
    depth = "top-level folders" if label_depth == 1 else f"folders {label_depth} levels down"
    return Labelled(dict(sorted(files.items())), skipped, f"class folders in {folder} ({depth})")


def read_class_folders(root: Path, label_depth: int = 1) -> Labelled:
    """`label_class_tree`, stopping with a message when `root` has no class folders."""
    labelled = label_class_tree(root, label_depth)
    if not labelled.files:
        hint = " (a flat folder of files named like cat.1.jpg? run `vistrain split` first)" if labelled.skipped else ""
        raise DataError(f"{root} has no class folders{hint}")
    return labelled


def label_flat_folder(folder: Path, pattern: str = DEFAULT_PATTERN) -> Labelled:
    """Label each file of a flat folder by the regex group `label` matched at the start of its name (whether it
    can be read is decided when it is read); links to folders are skipped."""
    regex = re.compile(pattern)
    if "label" not in regex.groupindex:
        raise DataError(f"--pattern {pattern!r} needs a named group (?P<label>...)")
    files: dict[str, list[Path]] = defaultdict(list)
    entries = sorted(p for p in folder.iterdir() if not is_hidden(p.name))
    skipped = [Skipped(p, FOLDER_LINK) for p in entries if p.is_dir() and p.is_symlink()]
    for path in (p for p in entries if not p.is_dir()):
        match = regex.match(path.name)
        if match and match.group("label"):
            files[match.group("label")].append(path)
        else:
            skipped.append(Skipped(path, f"name does not match the pattern {pattern!r}"))
    return Labelled(dict(sorted(files.items())), skipped, f"flat folder {folder}, labels from file names")
