"""Find the labelled images and split them into training and validation sets.

Four sources are understood:

* ``DATA/train/<class>/...`` with ``DATA/val/<class>/...`` (or ``validation/``);
* ``DATA/<class>/...``, split by a seeded, stratified validation fraction (`vistrain.data.splits`);
* a CSV list (`vistrain.data.labels_csv`), the only source for multi-label and regression targets besides
  folders named by numbers;
* an SVHN ``.mat`` file (`vistrain.data.matlab`), read as the class folders it is converted into once.

Class ids are the sorted class names. Files are not opened here: whether a file is an image is decided by its
content when it is decoded, and a file that is not is reported as skipped there.
"""

from __future__ import annotations

from pathlib import Path

from vistrain.data.decisions import EXCLUDED, Decisions
from vistrain.data.folders import data_folder, find_split_dirs, read_class_folders
from vistrain.data.labels_csv import LABEL_SEPARATOR, infer_kind, is_number, parse_targets, read_label_csv
from vistrain.data.matlab import is_mat
from vistrain.data.samples import TASKS, DataError, Dataset, Sample, Skipped
from vistrain.data.splits import stratified_split


def choose_task(requested: str, kind: str, n_outputs: int) -> tuple[str, str]:
    """(task, why) for labels of `kind` (classes, multilabel, regression); `auto` picks binary for two classes
    and multiclass for more; an explicit choice is checked against the labels."""
    if requested not in ("auto", *TASKS):
        raise DataError(f"unknown task {requested!r}; choose auto or one of {', '.join(TASKS)}")
    if kind == "classes":
        if requested in ("auto", "binary", "multiclass"):
            task = requested if requested != "auto" else ("binary" if n_outputs == 2 else "multiclass")
            if task == "binary" and n_outputs != 2:
                raise DataError(f"task binary needs exactly 2 classes, the data has {n_outputs}")
            return task, f"{n_outputs} classes, one per image"
    elif requested in ("auto", kind):
        return kind, {"multilabel": f"{n_outputs} labels, any number per image",
                      "regression": f"{n_outputs} numeric target(s)"}[kind]
    raise DataError(f"task {requested} does not fit labels of kind {kind}")


def label_kind(task: str) -> str:
    """The kind of labels a task reads: classes (binary, multiclass, auto), multilabel or regression."""
    return task if task in ("multilabel", "regression") else "classes"


def class_samples(folders: dict[str, list[Path]], classes: list[str]) -> list[Sample]:
    """Samples whose targets are class ids in `classes`, class by class."""
    index = {name: i for i, name in enumerate(classes)}
    return [Sample(path, index[name]) for name, files in sorted(folders.items()) for path in files]


def as_targets(samples: list[Sample], kind: str, classes: list[str]) -> tuple[list[Sample], list[str]]:
    """Class-id samples as `kind` targets, with the output names: unchanged (classes), one label each
    (multilabel), or the value of a folder named by a number (regression)."""
    if kind == "classes":
        return samples, classes
    if kind == "multilabel":
        return [Sample(s.path, tuple(float(i == s.target) for i in range(len(classes)))) for s in samples], classes
    try:
        values = [float(name) for name in classes]
    except ValueError:
        raise DataError(f"task regression on folders needs folders named by numbers, not {classes}; "
                        "or give the values in a label CSV") from None
    return [Sample(s.path, (values[s.target],)) for s in samples], ["value"]


def load_dataset(source: str | Path, val_fraction: float = 0.2, seed: int = 0, label_depth: int = 1,
                 task: str = "auto", image_root: Path | None = None, decisions: Path | None = None,
                 cache_dir: Path | None = None) -> Dataset:
    """Discover the outputs and samples of a data folder, a label CSV or an SVHN .mat (converted in `cache_dir`),
    split off a validation set when there is none, settle the task (see `choose_task`), and honour the review
    decisions (the file `decisions`, else the one beside the data, if any: excluded images are skipped, relabelled
    ones take their new label)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist")
    if source.is_file() and not is_mat(source):
        dataset = _csv_dataset(source, image_root, val_fraction, seed, task)
    else:
        folder, converted = data_folder(source, cache_dir)
        dataset = _folder_dataset(folder, val_fraction, seed, label_depth)
        dataset.layout = "; ".join(filter(None, (converted, dataset.layout)))
        kind = label_kind(task)
        if kind != "classes":
            classes = dataset.classes
            dataset.train, dataset.classes = as_targets(dataset.train, kind, classes)
            dataset.val, _ = as_targets(dataset.val, kind, classes)
            dataset.layout += f" (folders as {kind} targets)"
        dataset.task, dataset.task_reason = choose_task(task, kind, len(dataset.classes))
    decisions = Decisions.resolve(decisions, source)
    if decisions:
        applying = sum(decisions.get(s.path) is not None for s in dataset.train + dataset.val)
        dataset.train, excluded = apply_decisions(dataset.train, decisions, dataset.task, dataset.classes)
        dataset.val, excluded_val = apply_decisions(dataset.val, decisions, dataset.task, dataset.classes)
        dataset.skipped += excluded + excluded_val
        dataset.layout += (f"; {len(decisions)} review decision(s) from {decisions.path}"
                           + ("" if applying == len(decisions) else f", {applying} of them for images here"))
    return dataset


def apply_decisions(samples: list[Sample], decisions: Decisions, task: str,
                    classes: list[str]) -> tuple[list[Sample], list[Skipped]]:
    """`samples` without the excluded images (returned as skipped) and with the relabelled ones' new targets."""
    kept, excluded = [], []
    for sample in samples:
        decision = decisions.get(sample.path)
        if decision is None or decision.action == "keep":
            kept.append(sample)
        elif decision.action == "exclude":
            excluded.append(Skipped(sample.path, EXCLUDED))
        else:
            kept.append(Sample(sample.path, parse_label(decision.label, task, classes, decisions.where(decision))))
    return kept, excluded


def parse_label(label: str, task: str, classes: list[str], where: str) -> int | tuple[float, ...]:
    """A label as written by a person (a class; labels joined by ';'; numbers joined by ';') as a target."""
    parts = [part.strip() for part in label.split(LABEL_SEPARATOR) if part.strip()]
    if task == "regression":
        values = tuple(float(part) for part in parts) if all(is_number(part) for part in parts) else ()
        if len(values) != len(classes):
            raise DataError(f"{where}: {label!r} is not {len(classes)} number(s) separated by '{LABEL_SEPARATOR}'")
        return values
    unknown = [part for part in parts if part not in classes]
    if unknown or not parts or (task != "multilabel" and len(parts) != 1):
        raise DataError(f"{where}: {label!r} is not {'labels' if task == 'multilabel' else 'a class'} of "
                        f"{', '.join(classes)}")
    if task == "multilabel":
        return tuple(float(name in parts) for name in classes)
    return classes.index(parts[0])


def _folder_dataset(root: Path, val_fraction: float, seed: int, label_depth: int) -> Dataset:
    train_dir, val_dir = find_split_dirs(root)
    train_labelled = read_class_folders(train_dir, label_depth)
    train_folders, skipped = train_labelled.files, train_labelled.skipped
    classes = sorted(train_folders)
    if len(classes) < 2:
        raise DataError(f"{train_dir} has a single class folder ({classes[0]}); a classifier needs at least two")
    if val_dir is None:
        train, val = stratified_split(class_samples(train_folders, classes), val_fraction, seed)
        layout = f"class folders in {train_dir}, {val_fraction:.0%} split off for validation (seed {seed})"
        return Dataset(classes, train, val, layout, skipped)
    val_labelled = read_class_folders(val_dir, label_depth)
    val_folders, val_loose = val_labelled.files, val_labelled.skipped
    if sorted(val_folders) != classes:
        only_train = sorted(set(classes) - set(val_folders))
        only_val = sorted(set(val_folders) - set(classes))
        raise DataError(
            f"{train_dir} and {val_dir} have different classes: "
            f"only in {train_dir.name}/: {only_train or 'none'}; only in {val_dir.name}/: {only_val or 'none'}"
        )
    layout = f"{train_dir} for training, {val_dir} for validation"
    return Dataset(classes, class_samples(train_folders, classes), class_samples(val_folders, classes), layout,
                   skipped + val_loose)


def _csv_samples(rows: list, targets: list, kind: str, names: list[str]) -> list[Sample]:
    """Samples of parsed CSV rows, with targets in `names` (the outputs' order)."""
    if kind == "classes":
        index = {name: i for i, name in enumerate(names)}
        return [Sample(row.path, index[t]) for row, t in zip(rows, targets)]
    if kind == "multilabel":
        return [Sample(row.path, tuple(float(name in labels) for name in names)) for row, labels in zip(rows, targets)]
    return [Sample(row.path, t) for row, t in zip(rows, targets)]


def _csv_dataset(csv_path: Path, image_root: Path | None, val_fraction: float, seed: int, task: str) -> Dataset:
    table = read_label_csv(csv_path, image_root)
    if task == "auto":
        kind, why = infer_kind(table)
    else:
        kind, why = label_kind(task), "asked for"
    rows, targets, bad = parse_targets(table, kind)
    if not rows:
        raise DataError(f"{csv_path}: no usable rows (" + "; ".join(s.reason for s in (table.skipped + bad)[:3]) + ")")
    if kind == "classes":
        names = sorted(set(targets))
    elif kind == "multilabel":
        names = sorted({label for labels in targets for label in labels})
    else:
        names = table.columns
    samples = _csv_samples(rows, targets, kind, names)
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


def load_labelled(source: str | Path, classes: list[str], task: str, image_root: Path | None = None,
                  decisions: Path | None = None, cache_dir: Path | None = None
                  ) -> tuple[list[Sample], list[Skipped]]:
    """Samples to score a trained model on, with targets in its outputs (`classes`): a folder's validation split
    if it has one, else all of it (an SVHN .mat: all of it); or a CSV's val rows if it has a split column, else
    all rows. Review decisions are honoured as in `load_dataset`."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist")
    samples, skipped = _labelled(source, classes, task, image_root, cache_dir)
    decisions = Decisions.resolve(decisions, source)
    if decisions:
        samples, excluded = apply_decisions(samples, decisions, task, classes)
        skipped += excluded
    return samples, skipped


def _labelled(source: Path, classes: list[str], task: str, image_root: Path | None,
              cache_dir: Path | None) -> tuple[list[Sample], list[Skipped]]:
    if source.is_file() and not is_mat(source):
        return _labelled_csv(source, classes, task, image_root)
    train_dir, val_dir = find_split_dirs(data_folder(source, cache_dir)[0])
    folder = val_dir or train_dir
    labelled = read_class_folders(folder)
    folders, skipped = labelled.files, labelled.skipped
    if task == "regression":
        return as_targets(class_samples(folders, sorted(folders)), "regression", sorted(folders))[0], skipped
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DataError(f"{folder} has classes the model does not know: {unknown}; it knows {classes}")
    return as_targets(class_samples(folders, classes), label_kind(task), classes)[0], skipped


def _labelled_csv(csv_path: Path, classes: list[str], task: str,
                  image_root: Path | None) -> tuple[list[Sample], list[Skipped]]:
    table = read_label_csv(csv_path, image_root)
    kind = label_kind(task)
    rows, targets, bad = parse_targets(table, kind)
    if kind == "regression" and len(table.columns) != len(classes):
        raise DataError(f"{csv_path} has {len(table.columns)} target column(s), the model predicts {len(classes)}")
    names = {"classes": set(targets), "multilabel": {label for t in targets for label in t}}.get(kind, set())
    unknown = sorted(names - set(classes))
    if unknown:
        raise DataError(f"{csv_path} has labels the model does not know: {unknown}; it knows {classes}")
    samples = _csv_samples(rows, targets, kind, classes)
    if any(row.split == "val" for row in rows):
        samples = [s for s, row in zip(samples, rows) if row.split == "val"]
    return samples, table.skipped + bad
