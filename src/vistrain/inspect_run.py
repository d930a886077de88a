"""`vistrain inspect`: what the model is sure of, unsure of and wrong about, as CSV files and the HTML report.

Per class (single-label), per label (multi-label: each label as a yes/no problem at its threshold), or the
largest errors (regression). Also reads and writes RUN/predictions.csv, the validation predictions of `train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vistrain.analysis import Entry, Predictions, analyse
from vistrain.data import Skipped, load_labelled
from vistrain.labels_csv import LABEL_SEPARATOR
from vistrain.report import write_report
from vistrain.run_dir import read_config, read_csv, read_skipped, write_csv

PREDICTIONS = "predictions.csv"


@dataclass
class Inspection:
    lists: dict[str, dict[str, dict[str, list[Entry]]]]  # section (all classes, or a label) -> list -> class -> entries
    label_errors: list[Entry]  # single-label: lowest probability of the given class; regression: largest errors
    report: Path
    reused_predictions: bool


def write_predictions(path: Path, p: Predictions) -> None:
    """predictions.csv: file, true, predicted and one column per output (probability or value)."""
    if p.task == "regression":
        header = ["file", *(f"true_{n}" for n in p.classes), *(f"predicted_{n}" for n in p.classes)]
        rows = [[str(f), *(f"{v:.6g}" for v in t), *(f"{v:.6g}" for v in o)]
                for f, t, o in zip(p.files, p.targets, p.outputs)]
    else:
        header = ["file", "true", "predicted", *(f"prob_{name}" for name in p.classes)]
        rows = [[str(f), _names(p, t), _names(p, pred), *(f"{x:.6f}" for x in o)]
                for f, t, pred, o in zip(p.files, p.targets, _predicted(p), p.outputs)]
    write_csv(path, header, rows)


def _predicted(p: Predictions) -> np.ndarray:
    return (p.outputs >= np.asarray(p.thresholds)).astype(int) if p.task == "multilabel" else p.predicted


def _names(p: Predictions, target) -> str:
    if p.task == "multilabel":
        return LABEL_SEPARATOR.join(name for name, on in zip(p.classes, target) if on)
    return p.classes[target]


def saved_predictions(run: Path, config: dict) -> Predictions:
    """The validation predictions that `train` wrote to RUN/predictions.csv."""
    rows = read_csv(run / PREDICTIONS)
    classes, task = config["classes"], config["task"]
    files = [Path(row["file"]) for row in rows]
    if task == "regression":
        targets = np.array([[float(row[f"true_{n}"]) for n in classes] for row in rows]).reshape(-1, len(classes))
        outputs = np.array([[float(row[f"predicted_{n}"]) for n in classes] for row in rows]).reshape(-1, len(classes))
        return Predictions(files, targets, outputs, classes, task)
    outputs = np.array([[float(row[f"prob_{n}"]) for n in classes] for row in rows]).reshape(-1, len(classes))
    if task == "multilabel":
        targets = np.array([[float(n in row["true"].split(LABEL_SEPARATOR)) for n in classes] for row in rows])
        return Predictions(files, targets.reshape(-1, len(classes)), outputs, classes, task, config["thresholds"])
    index = {name: i for i, name in enumerate(classes)}
    return Predictions(files, np.array([index[row["true"]] for row in rows], dtype=int), outputs, classes, task)


def predictions_for(run: Path, data: Path | None, cache_dir: Path | None = None, show_progress: bool = True,
                    image_root: Path | None = None) -> tuple[Predictions, list[Skipped], bool]:
    """Predictions on DATA (a folder or a label CSV; default: the run's validation images), reusing the saved
    ones when they cover exactly the same labelled files. Returns (predictions, skipped, whether reused)."""
    config = read_config(run)
    saved = saved_predictions(run, config)
    if data is None:
        return saved, read_skipped(run), True
    samples, skipped = load_labelled(data, config["classes"], config["task"], image_root)
    wanted = {s.path.resolve(): s.target for s in samples}
    if {f.resolve(): _key(t) for f, t in zip(saved.files, saved.targets)} == {f: _key(t) for f, t in wanted.items()}:
        return saved, skipped, True
    from vistrain.predict import Predictor  # torch and the backbone only when predictions must be made

    result = Predictor.from_run(run).predict([s.path for s in samples], cache_dir, show_progress)
    targets = np.array([wanted[p.resolve()] for p in result.paths])
    predictions = Predictions(result.paths, targets, result.outputs, config["classes"], config["task"],
                              config.get("thresholds"))
    return predictions, skipped + result.skipped, False


def _key(target) -> tuple | int:
    return tuple(round(float(v), 5) for v in target) if np.ndim(target) else int(target)


def inspect(run: Path, data: Path | None = None, top: int = 10, cache_dir: Path | None = None,
            show_progress: bool = True, image_root: Path | None = None) -> Inspection:
    """Rank the images, write RUN/inspect_*.csv and RUN/report.html."""
    config = read_config(run)
    predictions, skipped, reused = predictions_for(run, data, cache_dir, show_progress, image_root)
    sections, errors = analyse(predictions, top)
    header = ["class", "rank", "file", "true", "predicted", "probability", "probability_of_label"]
    by_list: dict[str, list] = {}
    for lists in sections.values():  # multilabel: one section per label, its classes "<label>" and "not <label>"
        for list_name, by_class in lists.items():
            by_list.setdefault(list_name, []).extend(
                [cls, rank, *_cells(e)] for cls, entries in by_class.items() for rank, e in enumerate(entries, 1))
    for list_name, rows in by_list.items():
        write_csv(run / f"inspect_{list_name}.csv", header, rows)
    if config["task"] == "regression":
        write_csv(run / "inspect_largest_errors.csv", ["rank", "file", "true", "predicted", "error"],
                  [[rank, str(e.file), e.true, e.predicted, f"{e.error:.6g}"] for rank, e in enumerate(errors, 1)])
    elif errors:
        write_csv(run / "inspect_label_errors.csv", header,
                  [[e.true, rank, *_cells(e)] for rank, e in enumerate(errors, 1)])
    source = "the run's validation images" if data is None else str(data)
    report = write_report(run, config, predictions, read_csv(run / "history.csv"), skipped, source, top)
    return Inspection(sections, errors, report, reused)


def _cells(e: Entry) -> list:
    return [str(e.file), e.true, e.predicted, f"{e.probability:.6f}", f"{e.label_probability:.6f}"]
