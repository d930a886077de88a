"""Find the labelled images and split them into training and validation sets.

Three sources are understood:

* ``DATA/train/<class>/...`` with ``DATA/val/<class>/...`` (or ``validation/``);
* ``DATA/<class>/...``, split by a seeded, stratified validation fraction;
* a CSV list (`vistrain.labels_csv`), the only source for multi-label and regression targets besides
  folders named by numbers.

Class ids are the sorted class names. Files are not opened here: whether a file is an image is
decided by its content when it is decoded, and a file that is not is reported as skipped there.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

VAL_DIR_NAMES = ("val", "validation")
TASKS = ("binary", "multiclass", "multilabel", "regression")


class DataError(ValueError):
    """The data folder cannot be used; the message names the folders at fault."""


@dataclass(frozen=True)
class Sample:
    """One labelled image file. `target` is a class id (binary, multiclass), a 0/1 tuple with one entry per
    label (multilabel) or a tuple of numbers (regression)."""

    path: Path
    target: int | tuple[float, ...]


@dataclass(frozen=True)
class Skipped:
    """A file that was left out, and why."""

    path: Path
    reason: str


@dataclass
class Dataset:
    """Training and validation samples with their output names (index = class id, label or target column)."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    layout: str
    skipped: list[Skipped] = field(default_factory=list)
    task: str = "auto"
    task_reason: str = ""


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


def choose_task(requested: str, kind: str, n_outputs: int) -> tuple[str, str]:
    """(task, why) for labels of `kind` (classes, multilabel, regression); `auto` picks binary for two classes
    and multiclass for more; an explicit choice is checked against the labels."""
    if requested not in ("auto", *TASKS):
        raise DataError(f"unknown task {requested!r}; choose auto or one of {', '.join(TASKS)}")
    if kind == "classes":
        if requested in ("auto", "binary", "multiclass"):
            task = requested if requested != "auto" else ("binary" if n_outputs == 2 else "multiclass")
            if task == "binary" and n_outputs != 2:
                raise DataError(f"--task binary needs exactly 2 classes, the data has {n_outputs}")
            return task, f"{n_outputs} classes, one per image"
    elif requested in ("auto", kind):
        return kind, {"multilabel": f"{n_outputs} labels, any number per image",
                      "regression": f"{n_outputs} numeric target(s)"}[kind]
    raise DataError(f"--task {requested} does not fit labels of kind {kind}")


def stratum(samples: list[Sample]) -> list:
    """What a split keeps in proportion: the class, the label combination, or the quintile of the first
    regression target."""
    if not samples or not isinstance(samples[0].target, tuple) or all(set(s.target) <= {0.0, 1.0} for s in samples):
        return [s.target for s in samples]
    order = sorted(range(len(samples)), key=lambda i: samples[i].target[0])
    keys = [0] * len(samples)
    for rank, i in enumerate(order):
        keys[i] = rank * 5 // len(samples)
    return keys


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split each stratum (see `stratum`) separately, so both parts keep its proportions; the same seed gives the
    same split."""
    if not 0 < val_fraction < 1:
        raise DataError(f"the validation fraction must be between 0 and 1, not {val_fraction}")
    rng = random.Random(seed)
    keys = stratum(samples)
    train, val = [], []
    for key in sorted(set(keys)):
        members = [s for s, k in zip(samples, keys) if k == key]
        rng.shuffle(members)
        # at least one image on each side whenever the stratum has two or more
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


def load_dataset(source: str | Path, val_fraction: float = 0.2, seed: int = 0, label_depth: int | None = None,
                 task: str = "auto", image_root: Path | None = None) -> Dataset:
    """Discover the outputs and samples of a data folder or a label CSV, split off a validation set when there
    is none, and settle the task (see `choose_task`)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist")
    if source.is_file():
        return _csv_dataset(source, image_root, val_fraction, seed, task)
    dataset = _folder_dataset(source, val_fraction, seed, label_depth)
    kind = task if task in ("multilabel", "regression") else "classes"
    if kind != "classes":
        dataset = _folder_targets(dataset, kind)
    dataset.task, dataset.task_reason = choose_task(task, kind, len(dataset.classes))
    return dataset


def _folder_dataset(root: Path, val_fraction: float, seed: int, label_depth: int | None) -> Dataset:
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
    return Dataset(classes, _samples(train_folders, classes), _samples(val_folders, classes), layout,
                   skipped + val_loose)


def _folder_targets(dataset: Dataset, kind: str) -> Dataset:
    """Class folders as multi-label targets (one label each) or, when named by numbers, regression values."""
    n = len(dataset.classes)
    if kind == "multilabel":
        def convert(s: Sample) -> Sample:
            return Sample(s.path, tuple(float(i == s.target) for i in range(n)))
        names = dataset.classes
    else:
        try:
            values = [float(name) for name in dataset.classes]
        except ValueError:
            raise DataError(f"--task regression on folders needs folders named by numbers, not {dataset.classes}; "
                            "or give the values in a CSV with --labels") from None

        def convert(s: Sample) -> Sample:
            return Sample(s.path, (values[s.target],))
        names = ["value"]
    return Dataset(names, [convert(s) for s in dataset.train], [convert(s) for s in dataset.val],
                   dataset.layout + f" (folders as {kind} targets)", dataset.skipped)


def _csv_dataset(csv_path: Path, image_root: Path | None, val_fraction: float, seed: int, task: str) -> Dataset:
    from vistrain.labels_csv import infer_kind, parse_targets, read_label_csv

    table = read_label_csv(csv_path, image_root)
    if task == "auto":
        kind, why = infer_kind(table)
    else:
        kind, why = ("classes" if task in ("binary", "multiclass") else task), f"--task {task}"
    rows, targets, bad = parse_targets(table, kind)
    if not rows:
        raise DataError(f"{csv_path}: no usable rows (" + "; ".join(s.reason for s in (table.skipped + bad)[:3]) + ")")
    if kind == "classes":
        names = sorted(set(targets))
        index = {name: i for i, name in enumerate(names)}
        samples = [Sample(row.path, index[t]) for row, t in zip(rows, targets)]
    elif kind == "multilabel":
        names = sorted({label for labels in targets for label in labels})
        samples = [Sample(row.path, tuple(float(name in labels) for name in names))
                   for row, labels in zip(rows, targets)]
    else:
        names = table.columns
        samples = [Sample(row.path, t) for row, t in zip(rows, targets)]
    if rows[0].split is None:
        train, val = stratified_split(samples, val_fraction, seed)
        layout = f"CSV list {csv_path}, {val_fraction:.0%} split off for validation (seed {seed})"
    else:
        train = [s for s, row in zip(samples, rows) if row.split == "train"]
        val = [s for s, row in zip(samples, rows) if row.split == "val"]
        layout = f"CSV list {csv_path}, split by its split column"
    dataset = Dataset(names, train, val, layout, table.skipped + bad)
    task_name, reason = choose_task(task, kind, len(names))
    dataset.task, dataset.task_reason = task_name, f"{reason}; {why}"
    return dataset


def load_labelled(source: str | Path, classes: list[str], task: str,
                  image_root: Path | None = None) -> tuple[list[Sample], list[Skipped]]:
    """Samples to score a trained model on, with targets in its outputs (`classes`): a folder's validation split
    if it has one, else all of it; or a CSV's val rows if it has a split column, else all rows."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist")
    if source.is_file():
        return _labelled_csv(source, classes, task, image_root)
    train_dir, val_dir = find_split_dirs(source)
    folder = val_dir or train_dir
    folders, skipped = read_class_folders(folder)
    if task == "regression":
        dataset = _folder_targets(Dataset(sorted(folders), _samples(folders, sorted(folders)), [], ""), task)
        return dataset.train, skipped
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DataError(f"{folder} has classes the model does not know: {unknown}; it knows {classes}")
    samples = _samples(folders, classes)
    if task == "multilabel":
        samples = [Sample(s.path, tuple(float(i == s.target) for i in range(len(classes)))) for s in samples]
    return samples, skipped


def _labelled_csv(csv_path: Path, classes: list[str], task: str,
                  image_root: Path | None) -> tuple[list[Sample], list[Skipped]]:
    from vistrain.labels_csv import parse_targets, read_label_csv

    table = read_label_csv(csv_path, image_root)
    kind = "classes" if task in ("binary", "multiclass") else task
    rows, targets, bad = parse_targets(table, kind)
    if kind == "regression" and len(table.columns) != len(classes):
        raise DataError(f"{csv_path} has {len(table.columns)} target column(s), the model predicts {len(classes)}")
    names = {"classes": set(targets), "multilabel": {label for t in targets for label in t}}.get(kind, set())
    unknown = sorted(names - set(classes))
    if unknown:
        raise DataError(f"{csv_path} has labels the model does not know: {unknown}; it knows {classes}")
    if kind == "classes":
        samples = [Sample(row.path, classes.index(t)) for row, t in zip(rows, targets)]
    elif kind == "multilabel":
        samples = [Sample(row.path, tuple(float(name in t) for name in classes)) for row, t in zip(rows, targets)]
    else:
        samples = [Sample(row.path, t) for row, t in zip(rows, targets)]
    if any(row.split == "val" for row in rows):
        samples = [s for s, row in zip(samples, rows) if row.split == "val"]
    return samples, table.skipped + bad
