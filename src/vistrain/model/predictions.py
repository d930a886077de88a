"""Predictions for labelled images (`train`'s validation predictions, or `evaluate`'s and `inspect`'s), and
their CSV file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vistrain.core.files import read_csv, write_csv
from vistrain.data.labels_csv import LABEL_SEPARATOR
from vistrain.data.samples import SINGLE_LABEL


@dataclass
class Predictions:
    """`targets`: class ids (n,) for single-label tasks, 0/1 per label (n, k) for multilabel, values (n, k) for
    regression; `outputs`: class or label probabilities, or values (n, k) (see `tasks.outputs`). A binary view of
    one label of a multi-label model has `thresholds` = [its threshold]."""

    files: list[Path]
    targets: np.ndarray
    outputs: np.ndarray
    classes: list[str]
    task: str = "multiclass"
    thresholds: list[float] | None = None

    @property
    def predicted(self) -> np.ndarray:
        """Class ids (single-label), 0/1 per label at its threshold (multilabel)."""
        if self.task == "multilabel":
            return (self.outputs >= np.asarray(self.thresholds or 0.5)).astype(int)
        if self.task == "binary" and self.thresholds:
            return (self.outputs[:, 1] >= self.thresholds[0]).astype(int)
        return self.outputs.argmax(1)

    @property
    def confidence(self) -> np.ndarray:
        return self.outputs.max(1)


def write_predictions(path: Path, p: Predictions) -> None:
    """file (absolute, so that the run is read alike from any folder), true, predicted and one column per output
    (probability, or true and predicted values)."""
    files = [os.path.abspath(f) for f in p.files]
    if p.task == "regression":
        rows = [[f, *(f"{v:.6g}" for v in t), *(f"{v:.6g}" for v in o)] for f, t, o in zip(files, p.targets, p.outputs)]
    else:
        rows = [[f, _names(p, t), _names(p, pred), *(f"{x:.6f}" for x in o)]
                for f, t, pred, o in zip(files, p.targets, p.predicted, p.outputs)]
    write_csv(path, columns(p.classes, p.task), rows)


def columns(classes: list[str], task: str) -> list[str]:
    """predictions.csv's header."""
    if task == "regression":
        return ["file", *(f"true_{n}" for n in classes), *(f"predicted_{n}" for n in classes)]
    return ["file", "true", "predicted", *(f"prob_{name}" for name in classes)]


def _names(p: Predictions, target) -> str:
    if p.task == "multilabel":
        return LABEL_SEPARATOR.join(name for name, on in zip(p.classes, target) if on)
    return p.classes[target]


def read_predictions(path: Path, classes: list[str], task: str, thresholds: list[float] | None) -> Predictions:
    """What `write_predictions` wrote; a ValueError names the column or row that cannot be read."""
    rows = read_csv(path, columns(classes, task))
    if not rows:
        raise ValueError(f"{path} has no predictions")
    targets, outputs = [], []
    for number, row in enumerate(rows, 1):
        try:
            target, output = _parse(row, classes, task)
        except (AttributeError, KeyError, TypeError, ValueError) as error:  # a short row's missing cells are None
            raise ValueError(f"{path} row {number} cannot be read ({type(error).__name__}: {error})") from None
        targets.append(target)
        outputs.append(output)
    files = [Path(row["file"]) for row in rows]
    shape = (-1, len(classes))
    targets_array = np.array(targets, dtype=int) if task in SINGLE_LABEL else np.array(targets).reshape(shape)
    return Predictions(files, targets_array, np.array(outputs).reshape(shape), classes, task,
                       thresholds if task == "multilabel" else None)


def _parse(row: dict, classes: list[str], task: str) -> tuple[int | list[float], list[float]]:
    """(target, outputs) of one row of predictions.csv."""
    if task == "regression":
        return [float(row[f"true_{n}"]) for n in classes], [float(row[f"predicted_{n}"]) for n in classes]
    outputs = [float(row[f"prob_{n}"]) for n in classes]
    if task == "multilabel":
        return [float(n in row["true"].split(LABEL_SEPARATOR)) for n in classes], outputs
    return classes.index(row["true"]), outputs
