"""`vistrain inspect`: what the model is sure of, unsure of and wrong about, as CSV files and the HTML report.

Per class (single-label), per label (multi-label: each label as a yes/no problem at its threshold), or the
largest errors (regression), from the validation predictions `train` saved or from new predictions on other data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from vistrain.analysis.audit_report import OUT_OF_SAMPLE
from vistrain.analysis.ranking import Entry, analyse
from vistrain.analysis.report import write_report
from vistrain.core.errors import OptionError
from vistrain.core.files import write_csv
from vistrain.core.messages import warn
from vistrain.data.datasets import load_labelled
from vistrain.data.samples import Skipped
from vistrain.model.predictions import Predictions, read_predictions
from vistrain.model.run_config import RunConfig
from vistrain.model.run_dir import (RunError, inspect_file, read_config, read_history, read_leaderboard,
                                    read_saved_predictions, read_skipped)


@dataclass
class Inspection:
    """What `inspect` returns: the ranked lists, the possible label errors (or largest errors), the report's path,
    and whether the run's saved predictions were reused."""

    lists: dict[str, dict[str, dict[str, list[Entry]]]]  # section (all classes, or a label) -> list -> class -> entries
    label_errors: list[Entry]  # single-label: lowest probability of the given class; regression: largest errors
    report: Path
    reused_predictions: bool
    out_of_sample: int = 0  # training images whose predictions came from an audit (see `with_audit`)


def predictions_for(run: Path, data: Path | None, cache_dir: Path | None = None, show_progress: bool = True,
                    image_root: Path | None = None) -> tuple[Predictions, list[Skipped], bool]:
    """Predictions on DATA (a folder or a label CSV; default: the run's validation images), reusing the saved
    ones when they cover exactly the same labelled files. Returns (predictions, skipped, whether reused)."""
    config = read_config(run)
    if data is None:
        return read_saved_predictions(run, config), _or_nothing(read_skipped, run, "skipped files"), True
    samples, skipped = load_labelled(data, list(config.classes), config.task, image_root, cache_dir=cache_dir)
    wanted = {s.path.resolve(): s.target for s in samples}
    try:
        saved = read_saved_predictions(run, config)
    except RunError:  # missing or damaged: DATA is predicted again
        saved = None
    if saved is not None and {f.resolve(): _key(t) for f, t in zip(saved.files, saved.targets)} == {
            f: _key(t) for f, t in wanted.items()}:
        return saved, skipped, True
    from vistrain.model.predictor import Predictor  # torch and the backbone only when predictions must be made

    result = Predictor.from_run(run).predict([s.path for s in samples], cache_dir, show_progress)
    targets = np.array([wanted[p.resolve()] for p in result.paths])
    predictions = Predictions(result.paths, targets, result.outputs, list(config.classes), config.task,
                              config.thresholds)
    return predictions, skipped + result.skipped, False


def with_audit(run: Path, config: RunConfig, predictions: Predictions, audit: Path) -> tuple[Predictions, int]:
    """`predictions` with the audit's out-of-sample outputs (AUDIT/predictions.csv, `vistrain audit`) for the run's
    training images it covers: the run's own model has fitted those, so its outputs would hide their label errors.
    Validation images keep the run's predictions. Returns the predictions and how many were replaced."""
    path = audit / OUT_OF_SAMPLE
    if not path.is_file():
        raise RunError(f"{audit} holds no audit ({OUT_OF_SAMPLE} is missing); run `vistrain audit` first")
    try:
        audited = read_predictions(path, list(config.classes), config.task, config.thresholds)
    except ValueError as error:
        raise RunError(f"{path} does not fit this run ({error}); audit the same data and classes") from None
    outputs = {f.resolve(): row for f, row in zip(audited.files, audited.outputs)}
    validation = {f.resolve() for f in read_saved_predictions(run, config).files}
    training = [i for i, f in enumerate(predictions.files) if f.resolve() in outputs and f.resolve() not in validation]
    merged = predictions.outputs.copy()
    for i in training:
        merged[i] = outputs[predictions.files[i].resolve()]
    return replace(predictions, outputs=merged), len(training)


def _key(target) -> tuple | int:
    return tuple(round(float(v), 5) for v in target) if np.ndim(target) else int(target)


def inspect(run: Path, data: Path | None = None, top: int = 10, cache_dir: Path | None = None,
            show_progress: bool = True, image_root: Path | None = None, audit: Path | None = None) -> Inspection:
    """Rank the images, write RUN/inspect_*.csv and RUN/report.html; with `audit` (a `vistrain audit` folder), the
    run's training images are ranked by their out-of-sample predictions (see `with_audit`)."""
    config = read_config(run)
    if audit is not None and data is None:
        raise OptionError("{audit} ranks the run's training images by the audit's predictions: give the data too; "
                          "without it, only the validation images are ranked")
    predictions, skipped, reused = predictions_for(run, data, cache_dir, show_progress, image_root)
    out_of_sample = 0
    if audit is not None:
        predictions, out_of_sample = with_audit(run, config, predictions, audit)
    predictions = replace(predictions, classes=config.labels)  # from here on, classes by their names
    sections, errors = analyse(predictions, top)
    header = ["class", "rank", "file", "true", "predicted", "probability", "probability_of_label"]
    by_list: dict[str, list] = {}
    for lists in sections.values():  # multilabel: one section per label, its classes "<label>" and "not <label>"
        for list_name, by_class in lists.items():
            by_list.setdefault(list_name, []).extend(
                [cls, rank, *_cells(e)] for cls, entries in by_class.items() for rank, e in enumerate(entries, 1))
    for list_name, rows in by_list.items():
        write_csv(run / inspect_file(list_name), header, rows)
    if config.task == "regression":
        write_csv(run / inspect_file("largest_errors"), ["rank", "file", "true", "predicted", "error"],
                  [[rank, str(e.file), e.true, e.predicted, f"{e.error:.6g}"] for rank, e in enumerate(errors, 1)])
    elif errors:
        write_csv(run / inspect_file("label_errors"), header,
                  [[e.true, rank, *_cells(e)] for rank, e in enumerate(errors, 1)])
    source = "the run's validation images" if data is None else str(data)
    if out_of_sample:
        source += f" ({out_of_sample} training images ranked by the audit's out-of-sample predictions)"
    history = _or_nothing(read_history, run, "training curves")
    leaderboard = _or_nothing(read_leaderboard, run, "leaderboard")
    report = write_report(run, config, predictions, history, skipped, source, top, leaderboard)
    return Inspection(sections, errors, report, reused, out_of_sample)


def _or_nothing(read: Callable[[Path], list], run: Path, lost: str) -> list:
    """What the report can do without: `read(run)`, or [] with a warning when its file is damaged."""
    try:
        return read(run)
    except RunError as error:
        warn(f"warning: {error}; the report shows no {lost}")
        return []


def _cells(e: Entry) -> list:
    return [str(e.file), e.true, e.predicted, f"{e.probability:.6f}", f"{e.label_probability:.6f}"]
