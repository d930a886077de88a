"""The run directory, in one place: what a trained run holds, and how each file is written and read back.

    config.json           backbone, preprocessing, the features' precision (fp32 or int8) and calibration images
                          (seeded training images: [file, SHA-256] pairs), classes in index order (and class_names,
                          {class: name}, when a mapping named them), task, head, training settings, data, versions
                          (written last: a run with a config.json is complete)
    head.safetensors      the trained head's weights (no pickle anywhere)
    backbone.safetensors  with a fine-tuning that beat the frozen head: the fine-tuned backbone (its SHA-256 is in
                          config.json)
    metrics.json          validation metrics of the best epoch, timings
    leaderboard.csv       with --budget: each candidate tried, what it changed, its held-out metric and loss, its
                          validation metric, its seconds, the one chosen (`write_leaderboard`)
    history.csv           loss and score per epoch, with its phase of training (frozen, fine-tune, a budget's
                          candidate; files written before 2026-12-04 call the column `stage`)
    predictions.csv       validation images: file, true, predicted, an output per class or label (`predictions`)
    skipped.csv           files left out, with the reason
    report.html           the inspection report (`vistrain.analysis.report`)
    int8/                 an int8 run's int8 feature extractors (ONNX, 4-5 MB each), as cached: predicting needs
                          neither the cache nor the calibration images then
    checkpoint.pt         only while a run is unfinished: what `train --resume` needs
    inspect_<list>.csv    `inspect`'s ranked lists, one file a list (`inspect_file`)
    model.onnx, model-int8.onnx, model.pt, model.tflite, model-int8.tflite, model.mlpackage/,
    model-int8.mlpackage/, model_openvino/, model-int8_openvino/
                          `export`'s files and folders, by format and int8 or not (`EXPORTS`)
    .vistrain-lock        only while a process writes the run (`vistrain.model.run_state`)

Every file is written atomically (`vistrain.core.files`), and `train --overwrite` removes all of these
(`run_files`), config.json first, and nothing else.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from vistrain.core.errors import OptionError, quoted
from vistrain.core.files import (leftovers, make_folder, read_csv, remove_atomic, sha256_file, write_atomic, write_csv,
                                 write_json)
from vistrain.data.samples import Skipped
from vistrain.features.precision import FP32, Precision
from vistrain.model.predictions import Predictions, read_predictions, write_predictions
from vistrain.model.run_config import PartConfig, RunConfig

if TYPE_CHECKING:
    import torch

    from vistrain.backbones import Backbone

CONFIG = "config.json"
WEIGHTS = "head.safetensors"
BACKBONE_WEIGHTS = "backbone.safetensors"
METRICS = "metrics.json"
HISTORY = "history.csv"
PREDICTIONS = "predictions.csv"
SKIPPED = "skipped.csv"
REPORT = "report.html"
INT8_MODELS = "int8"  # a folder: copies of the int8 feature extractors an int8 run's features came from
CHECKPOINT = "checkpoint.pt"
LEADERBOARD = "leaderboard.csv"
OLD_HISTORY_COLUMNS = {"stage": "phase"}  # history.csv's columns as runs before 2026-12-04 named them
LOCK = ".vistrain-lock"  # held while a process writes the run (`vistrain.model.run_state`)
RUN_FILES = (CONFIG, CHECKPOINT, WEIGHTS, BACKBONE_WEIGHTS, METRICS, HISTORY, PREDICTIONS, SKIPPED, REPORT,  # train's
             INT8_MODELS, LEADERBOARD)
EXPORTS = {  # `export`'s default file or folder in the run, by format (`vistrain.deploy.formats`): fp32[, int8]
    "onnx": ("model.onnx", "model-int8.onnx"),
    "torchscript": ("model.pt",),
    "tflite": ("model.tflite", "model-int8.tflite"),
    "coreml": ("model.mlpackage", "model-int8.mlpackage"),
    "openvino": ("model_openvino", "model-int8_openvino"),
}


class RunError(ValueError):
    """The run directory is missing, incomplete or damaged; the message names the file."""


class RunOptionError(RunError, OptionError):
    """A RunError whose way out is an option (`out`, `overwrite`): the command line spells it as its flag."""


def run_path(out: str | Path | None) -> Path:
    """Where a new run goes: `out`, or runs/<timestamp>."""
    return Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def inspect_file(list_name: str) -> str:
    """The name of the CSV of one of `inspect`'s ranked lists."""
    return f"inspect_{list_name}.csv"


def run_files(run: Path) -> list[Path]:
    """Every file and folder of a run that `run` holds, in the order `new_run_dir` removes them: config.json and
    checkpoint.pt first (without them no run passes for complete, `vistrain.model.run_state`), then the rest of
    `train`'s, `inspect`'s lists, `export`'s files and folders, and what a killed write or removal of any of them
    left (`vistrain.core.files.leftovers`)."""
    names = [*RUN_FILES, *(name for names in EXPORTS.values() for name in names)]
    found = [run / name for name in names if os.path.lexists(run / name)] + sorted(run.glob(inspect_file("*")))
    return found + [path for name in [*names, inspect_file("*")] for path in leftovers(run, name)]


def new_run_dir(out: str | Path | None, overwrite: bool = False) -> Path:
    """Create the run directory (`run_path`). An existing non-empty one needs `overwrite`, and then loses every file
    and folder of the run it held (`run_files`; a folder whole or not at all, `remove_atomic`), nothing else."""
    path = run_path(out)
    if path.is_dir() and any(p.name != LOCK for p in path.iterdir()):
        if not overwrite:
            raise RunOptionError(f"{quoted(path)} already holds files; choose another {{out}} or pass {{overwrite}}")
        for old in run_files(path):
            remove_atomic(old)
    return make_folder(path, "the run directory (--out)")


def read_config(run: str | Path) -> RunConfig:
    """RUN/config.json, checked (`RunConfig.from_json`): a damaged one is a RunError naming the file and the key,
    never a KeyError later."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise RunError(f"{run} is not a vistrain run directory (no {CONFIG})")
    try:
        values = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:  # JSON and UTF-8 errors; nesting deeper than Python's stack
        raise RunError(f"{path} is damaged: not valid JSON ({error})") from None
    try:
        return RunConfig.from_json(values)
    except ValueError as error:
        raise RunError(f"{path} is damaged: {error}") from None


def part_preprocessing(config: RunConfig, backbone: Backbone) -> Backbone:
    """A concatenation with each part's preprocessing as the run recorded it; runs from before parts took their own
    (no backbone.parts) fed every part the run's one preprocessing, and still do."""
    if not backbone.parts:
        return backbone
    recorded = config.backbone.parts
    if recorded is None:
        recorded = tuple(PartConfig(part.name, config.preprocess) for part in backbone.parts)
    if [each.name for each in recorded] != [part.name for part in backbone.parts]:
        raise RunError(f"config.json's backbone.parts do not name the parts of {backbone.name}")
    return replace(backbone, parts=tuple(replace(part, preprocess=each.preprocess)
                                         for part, each in zip(backbone.parts, recorded)))


def run_precision(config: RunConfig, run: Path | None = None) -> Precision:
    """The precision of a run's features (fp32 for runs from before there was a choice), with the calibration
    images that set an int8 backbone's ranges and RUN's copies of its int8 models (`save_int8_models`)."""
    if config.precision == FP32.name:
        return FP32
    return Precision(config.precision, config.calibration, run / INT8_MODELS if run is not None else None)


def save_int8_models(run: Path, models: list[Path]) -> None:
    """Copies of the int8 feature extractors (cached files, `features.runtime.int8_model_files`) in RUN/int8/, so
    that the run predicts where the cache lacks them and its calibration images are not (another machine)."""
    folder = make_folder(run / INT8_MODELS, "the run's int8 models")
    for model in models:
        write_atomic(folder / model.name, model.read_bytes())


def save_weights(path: Path, module: torch.nn.Module) -> None:
    """A module's whole state dict as safetensors, written atomically."""
    from safetensors.torch import save  # torch: only where weights are written

    write_atomic(path, save({k: v.contiguous() for k, v in module.state_dict().items()}))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file written by `save_weights`; a RunError naming the file when it is missing
    or damaged (empty, truncated, not safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise RunError(f"{path.parent} has no {path.name}")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise RunError(f"{path} is damaged ({error}); train the run again") from None


def write_skipped(path: Path, skipped: list[Skipped]) -> None:
    write_csv(path, ["file", "reason"], [[str(s.path), s.reason] for s in skipped])


def read_skipped(run: Path) -> list[Skipped]:
    """RUN/skipped.csv ([] when it is not there); a RunError when it is damaged."""
    return [Skipped(Path(row["file"]), row["reason"]) for row in _read_run_csv(run / SKIPPED, ["file", "reason"])]


def read_saved_predictions(run: Path, config: RunConfig) -> Predictions:
    """RUN/predictions.csv: the validation predictions `train` wrote; a RunError when it is missing or damaged."""
    path = run / PREDICTIONS
    if not path.is_file():
        raise RunError(f"{run} has no {PREDICTIONS}; give `inspect` the images to predict them again")
    try:
        return read_predictions(path, list(config.classes), config.task, config.thresholds)
    except ValueError as error:
        raise RunError(f"{error}; give `inspect` the images to predict them again") from None


def read_history(run: Path) -> list[dict]:
    """RUN/history.csv's rows ([] when it is not there), numbers as numbers, each epoch's `phase` (older files' `stage`
    column read as it); a RunError when it is damaged."""
    path = run / HISTORY
    rows = _read_run_csv(path, ["epoch", "train_loss", "val_loss"])
    header = list(rows[0]) if rows else []
    scores = {key.removeprefix("train_") for key in header if key.startswith("train_")} - {"loss"}
    if rows and (len(scores) != 1 or f"val_{scores.pop()}" not in header):
        raise RunError(f"{path} is damaged: its columns ({', '.join(header)}) do not name one score")
    numbers = [key for key in header if key == "epoch" or key.startswith(("train_", "val_"))]
    try:
        return [{**{OLD_HISTORY_COLUMNS.get(key, key): value for key, value in row.items()},
                 **{key: (int if key == "epoch" else float)(row[key]) for key in numbers}} for row in rows]
    except (TypeError, ValueError) as error:  # a short row's missing cells are None
        raise RunError(f"{path} is damaged: {error}") from None


def _read_run_csv(path: Path, needed: list[str]) -> list[dict]:
    try:
        return read_csv(path, needed)
    except ValueError as error:
        raise RunError(str(error)) from None


def save_backbone(run: Path, backbone: torch.nn.Module) -> dict:
    """RUN/backbone.safetensors (a fine-tuned backbone); returns what config.json records of it."""
    save_weights(run / BACKBONE_WEIGHTS, backbone)
    return {"weights_file": BACKBONE_WEIGHTS, "sha256": sha256_file(run / BACKBONE_WEIGHTS, max_bytes=None)}


def write_trained_run(run: Path, head: torch.nn.Module, metrics: dict, history: list, phases: list[str],
                      score_name: str, predictions: Predictions, skipped: list[Skipped], config: RunConfig,
                      leaderboard: list[dict] | None = None) -> None:
    """Every file of a trained run; config.json last, so that a run with a config is complete. `history`: the
    epochs' `EpochResult`s, `phases` their phases, `score_name` the task's score (`tasks.SCORE_NAMES`);
    `leaderboard`: a budget's rows (`write_leaderboard`)."""
    save_weights(run / WEIGHTS, head)
    write_json(run / METRICS, metrics)
    rows = [{**r.as_row(score_name), "phase": phase} for r, phase in zip(history, phases)]
    write_csv(run / HISTORY, list(rows[0]), [list(row.values()) for row in rows])
    write_predictions(run / PREDICTIONS, predictions)
    write_skipped(run / SKIPPED, skipped)
    if leaderboard:
        write_leaderboard(run / LEADERBOARD, leaderboard)
    write_json(run / CONFIG, config.to_json())


def write_leaderboard(path: Path, rows: list[dict]) -> None:
    """A budget's candidates, one a row, in the order tried (columns: candidate, changed, selection_<metric>,
    selection_loss (held-out: ties go to the lower), validation_<metric>, seconds, chosen, note)."""
    write_csv(path, list(rows[0]), [list(row.values()) for row in rows])


def read_leaderboard(run: Path) -> list[dict]:
    """RUN/leaderboard.csv's rows ([] for a run trained without a budget); a RunError when it is damaged."""
    return _read_run_csv(run / LEADERBOARD, ["candidate", "changed", "seconds", "chosen"])
