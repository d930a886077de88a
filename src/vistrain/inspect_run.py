"""`vistrain inspect`: per class, the most confident, least confident and confidently wrong images, the
possible label errors, as CSV files and the HTML report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vistrain.analysis import Entry, Predictions, label_errors, ranked_lists
from vistrain.data import Skipped, load_labelled_folder
from vistrain.report import write_report
from vistrain.run_dir import read_config, read_csv, read_skipped, write_csv


@dataclass
class Inspection:
    lists: dict[str, dict[str, list[Entry]]]  # list name -> class -> ranked entries
    label_errors: list[Entry]
    report: Path
    reused_predictions: bool


def saved_predictions(run: Path, classes: list[str]) -> Predictions:
    """The validation predictions that `train` wrote to RUN/predictions.csv."""
    rows = read_csv(run / "predictions.csv")
    index = {name: i for i, name in enumerate(classes)}
    probabilities = np.array([[float(row[f"prob_{name}"]) for name in classes] for row in rows]).reshape(-1, len(classes))
    return Predictions([Path(row["file"]) for row in rows], np.array([index[row["true"]] for row in rows], dtype=int),
                       probabilities, classes)


def predictions_for(run: Path, data: Path | None, cache_dir: Path | None = None,
                    show_progress: bool = True) -> tuple[Predictions, list[Skipped], bool]:
    """Predictions on DATA (default: the run's validation images), reusing the saved ones when they cover
    exactly the same labelled files. Returns (predictions, skipped files, whether saved ones were reused)."""
    classes = read_config(run)["classes"]
    saved = saved_predictions(run, classes)
    if data is None:
        return saved, read_skipped(run), True
    samples, skipped = load_labelled_folder(data, classes)
    wanted = {s.path.resolve(): s.label for s in samples}
    if {f.resolve(): int(label) for f, label in zip(saved.files, saved.labels)} == wanted:
        return saved, skipped, True
    from vistrain.predict import Predictor  # torch and the backbone only when predictions must be made

    result = Predictor.from_run(run).predict([s.path for s in samples], cache_dir, show_progress)
    labels = np.array([wanted[p.resolve()] for p in result.paths], dtype=int)
    return Predictions(result.paths, labels, result.probabilities, classes), skipped + result.skipped, False


def inspect(run: Path, data: Path | None = None, top: int = 10, cache_dir: Path | None = None,
            show_progress: bool = True) -> Inspection:
    """Rank the images, write RUN/inspect_*.csv and RUN/report.html."""
    config = read_config(run)
    predictions, skipped, reused = predictions_for(run, data, cache_dir, show_progress)
    lists = ranked_lists(predictions, top)
    errors = label_errors(predictions, top)
    header = ["class", "rank", "file", "true", "predicted", "probability", "probability_of_label"]
    for name, by_class in lists.items():
        write_csv(run / f"inspect_{name}.csv", header,
                  [_row(cls, rank, e) for cls, entries in by_class.items() for rank, e in enumerate(entries, 1)])
    write_csv(run / "inspect_label_errors.csv", header, [_row(e.true, rank, e) for rank, e in enumerate(errors, 1)])
    source = "the run's validation images" if data is None else str(data)
    report = write_report(run, config, predictions, read_csv(run / "history.csv"), skipped, source, top)
    return Inspection(lists, errors, report, reused)


def _row(class_name: str, rank: int, e: Entry) -> list:
    return [class_name, rank, str(e.file), e.true, e.predicted, f"{e.probability:.6f}", f"{e.label_probability:.6f}"]
