"""Labels from a CSV list, for every task.

    path,label                 one class per image (binary, multi-class)
    path,labels                "cat;dog": any number of labels per image (multi-label)
    path,value[,value...]      numbers (regression, one or more targets)

A header row is optional; it is recognised by its first cell (path, file, filename, image). A column named
`split` (train / val) fixes the split instead of --val-fraction. Paths are relative to the image root (by default
the CSV's folder), and must stay inside it once links are followed: a CSV cannot make vistrain read
/etc/passwd. Rows that cannot be used (outside the image root, no such file, empty label, a target that is not a
number) are reported with their line numbers and left out, never guessed.

ILSVRC's own validation list, LOC_val_solution.csv from Kaggle's ImageNet Object Localization Challenge, is
recognised by its exact header `ImageId,PredictionString`: each row's image is `<ImageId>.JPEG` in the image root
(the flat folder of validation images), and its label is the first token of PredictionString, the synset id
(`n01751748 0 0 100 100 n01751748 ...`: the boxes after it are left out).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from vistrain.core.files import RefusedFile, open_data_file
from vistrain.data.listing import resolves_inside
from vistrain.data.names import LABEL_SEPARATOR, label_problem
from vistrain.data.samples import DataError, Skipped

PATH_HEADERS = ("path", "file", "filename", "file_name", "image", "image_path")
SPLIT_HEADER = "split"
ILSVRC_HEADER = ["ImageId", "PredictionString"]  # LOC_val_solution.csv, as Kaggle publishes it
ILSVRC_SUFFIX = ".JPEG"
SPLIT_VALUES = {"train": "train", "val": "val", "validation": "val"}
KINDS = ("classes", "multilabel", "regression")


@dataclass(frozen=True)
class CsvRow:
    line: int
    path: Path
    cells: tuple[str, ...]  # the target cells, stripped
    split: str | None  # "train", "val" or None when the CSV has no split column


@dataclass
class CsvList:
    """The usable rows of a label CSV, its target column names and the rows left out."""

    source: Path
    columns: list[str]
    rows: list[CsvRow]
    skipped: list[Skipped]


def read_label_csv(csv_path: Path, image_root: Path | None = None) -> CsvList:
    """Read the rows whose file exists inside the image root and that have a target; everything else is reported
    in `skipped`."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path} is not a file")
    root = image_root or csv_path.parent
    inside = root.resolve()
    lines = read_csv_lines(csv_path)
    if not lines:
        raise DataError(f"{csv_path} is empty")
    if [c.strip() for c in lines[0][1]] == ILSVRC_HEADER:
        lines = [(lines[0][0], ["path", "label"])] + [(n, ilsvrc_row(row)) for n, row in lines[1:]]
    header = [c.strip().lower() for c in lines[0][1]]
    has_header = header[0] in PATH_HEADERS
    if has_header:
        names, lines = header[1:], lines[1:]
    else:
        width = len(lines[0][1]) - 1
        names = ["label"] if width <= 1 else [f"target_{i}" for i in range(1, width + 1)]
    split_at = names.index(SPLIT_HEADER) if SPLIT_HEADER in names else None
    columns = [name for i, name in enumerate(names) if i != split_at]
    if not columns:
        raise DataError(f"{csv_path}: needs a path column and at least one label or target column")
    rows, skipped = [], []
    for line, row in lines:
        where = f"{csv_path.name} line {line}"
        cells = [c.strip() for c in row[1:]] + [""] * (len(names) + 1 - len(row))
        split = cells.pop(split_at).lower() if split_at is not None else None
        path = root / row[0].strip()
        if not row[0].strip():
            skipped.append(Skipped(Path(f"{csv_path}:{line}"), f"{where}: no path"))
        elif len(row) - 1 > len(names):
            skipped.append(Skipped(Path(row[0].strip()), f"{where}: {len(row)} cells, the header has {len(names) + 1}"))
        elif not all(cells):
            skipped.append(Skipped(path, f"{where}: empty label"))
        elif _labels_problem(cells):
            skipped.append(Skipped(path, f"{where}: {_labels_problem(cells)}"))
        elif split is not None and split not in SPLIT_VALUES:
            skipped.append(Skipped(path, f"{where}: split {split!r} is not train or val"))
        elif not resolves_inside(path, inside):
            skipped.append(Skipped(path, f"{where}: outside the image root {root} (links followed)"))
        elif not path.is_file():
            skipped.append(Skipped(path, f"{where}: no such file"))
        else:
            rows.append(CsvRow(line, path, tuple(cells), SPLIT_VALUES.get(split)))
    return CsvList(csv_path, columns, rows, skipped)


def _labels_problem(cells: list[str]) -> str | None:
    """Why one of a row's labels cannot name a class (`label_problem`), or None."""
    labels = (label.strip() for cell in cells for label in cell.split(LABEL_SEPARATOR))
    return next((problem for label in labels if label and (problem := label_problem(label))), None)


def read_csv_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every row of a CSV file that is not blank; a DataError naming the file (and the line)
    when it cannot be read: not UTF-8, a cell over the csv module's field limit (128 KiB), a NUL byte."""
    try:
        with open_data_file(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle:
            reader, rows, start = csv.reader(handle), [], 1
            try:
                for row in reader:
                    if any(cell.strip() for cell in row):
                        rows.append((start, row))
                    start = reader.line_num + 1  # a quoted cell may hold line breaks: a row starts after the last
            except csv.Error as error:
                raise DataError(f"{path} line {reader.line_num}: {error}") from None
            return rows
    except (RefusedFile, UnicodeDecodeError) as error:
        raise DataError(f"{path}: {error}") from None


def ilsvrc_row(row: list[str]) -> list[str]:
    """A row of LOC_val_solution.csv as path,label: `<ImageId>.JPEG` and the first token of PredictionString."""
    image, tokens = row[0].strip(), row[1].split() if len(row) > 1 else []
    return [f"{image}{ILSVRC_SUFFIX}" if image else "", tokens[0] if tokens else "", *row[2:]]


def is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def infer_kind(table: CsvList) -> tuple[str, str]:
    """(kind, why): multi-label when a cell lists labels with ';', regression when every target is a number
    and there are several columns or more than two distinct values, else one class per image."""
    cells = [cell for row in table.rows for cell in row.cells]
    if any(LABEL_SEPARATOR in cell for cell in cells):
        return "multilabel", f"labels separated by '{LABEL_SEPARATOR}'"
    if cells and all(is_number(cell) for cell in cells):
        distinct = len(set(cells))
        if len(table.columns) > 1 or distinct > 2:
            return "regression", f"numeric targets ({distinct} distinct values)"
    return "classes", "one label per image"


def parse_targets(table: CsvList, kind: str) -> tuple[list[CsvRow], list[tuple], list[Skipped]]:
    """The rows usable for `kind`, with their parsed targets: a class name, a tuple of label names or a tuple
    of numbers; rows that do not fit are reported with their line numbers."""
    if kind not in KINDS:
        raise ValueError(f"unknown label kind {kind!r}")
    if kind != "regression" and len(table.columns) != 1:
        raise DataError(f"{table.source}: {len(table.columns)} target columns ({', '.join(table.columns)}); "
                        "classification needs exactly one label column")
    kept, targets, skipped = [], [], []
    for row in table.rows:
        where = f"{table.source.name} line {row.line}"
        if kind == "regression":
            bad = [cell for cell in row.cells if not is_number(cell)]
            if bad:
                skipped.append(Skipped(row.path, f"{where}: {bad[0]!r} is not a number"))
                continue
            target = tuple(float(cell) for cell in row.cells)
        elif kind == "multilabel":
            target = tuple(sorted({label.strip() for label in row.cells[0].split(LABEL_SEPARATOR)} - {""}))
            if not target:
                skipped.append(Skipped(row.path, f"{where}: empty label"))
                continue
        else:
            target = row.cells[0]
        kept.append(row)
        targets.append(target)
    return kept, targets, skipped
