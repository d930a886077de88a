"""Predictions for labelled images (`train`'s validation predictions, or `evaluate`'s and `inspect`'s), and
their CSV file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vistrain.core.files import read_csv, write_csv
from vistrain.data.labels_csv import LABEL_SEPARATOR


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
    """file, true, predicted and one column per output (probability, or true and predicted values)."""
    if p.task == "regression":
        header = ["file", *(f"true_{n}" for n in p.classes), *(f"predicted_{n}" for n in p.classes)]
        rows = [[str(f), *(f"{v:.6g}" for v in t), *(f"{v:.6g}" for v in o)]
                for f, t, o in zip(p.files, p.targets, p.outputs)]
    else:
        header = ["file", "true", "predicted", *(f"prob_{name}" for name in p.classes)]
        rows = [[str(f), _names(p, t), _names(p, pred), *(f"{x:.6f}" for x in o)]
                for f, t, pred, o in zip(p.files, p.targets, p.predicted, p.outputs)]
    write_csv(path, header, rows)


def _names(p: Predictions, target) -> str:
    if p.task == "multilabel":
        return LABEL_SEPARATOR.join(name for name, on in zip(p.classes, target) if on)
    return p.classes[target]


def read_predictions(path: Path, classes: list[str], task: str, thresholds: list[float] | None) -> Predictions:
    """What `write_predictions` wrote."""
    rows = read_csv(path)
    files = [Path(row["file"]) for row in rows]
    if task == "regression":
        targets = np.array([[float(row[f"true_{n}"]) for n in classes] for row in rows]).reshape(-1, len(classes))
        outputs = np.array([[float(row[f"predicted_{n}"]) for n in classes] for row in rows]).reshape(-1, len(classes))
        return Predictions(files, targets, outputs, classes, task)
    outputs = np.array([[float(row[f"prob_{n}"]) for n in classes] for row in rows]).reshape(-1, len(classes))
    if task == "multilabel":
        targets = np.array([[float(n in row["true"].split(LABEL_SEPARATOR)) for n in classes] for row in rows])
        return Predictions(files, targets.reshape(-1, len(classes)), outputs, classes, task, thresholds)
    index = {name: i for i, name in enumerate(classes)}
    return Predictions(files, np.array([index[row["true"]] for row in rows], dtype=int), outputs, classes, task)
