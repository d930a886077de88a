"""The run directory, in one place: what a trained run holds, and how each file is written and read back.

    config.json           backbone, preprocessing, the features' precision (fp32 or int8) and calibration images
                          (seeded training images: [file, SHA-256] pairs), classes in index order (and class_names,
                          {class: name}, when a mapping named them), task, head, training settings, data, versions
                          (written last: a run with a config.json is complete)
    head.safetensors      the trained head's weights (no pickle anywhere)
    backbone.safetensors  with a fine-tuning that beat the frozen head: the fine-tuned backbone (its SHA-256 is in
                          config.json)
    metrics.json          validation metrics of the best epoch, timings
    leaderboard.csv       with --budget: each candidate tried, what it changed, its held-out and validation metric,
                          its seconds, the one chosen (`write_leaderboard`)
    history.csv           loss and score per epoch, with its stage (frozen or fine-tune)
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
import platform
import re
from dataclasses import replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from vistrain.backbones.preprocess import Preprocess
from vistrain.core.files import (leftovers, make_folder, read_csv, remove_atomic, sha256_file, write_atomic, write_csv,
                                 write_json)
from vistrain.data.class_names import class_labels
from vistrain.data.samples import TASKS, Skipped
from vistrain.features.precision import FP32, PRECISIONS, Precision
from vistrain.model import HEADS
from vistrain.model.predictions import Predictions, read_predictions, write_predictions

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
            raise RunError(f"{path} already holds files; choose another --out or pass --overwrite")
        for old in run_files(path):
            remove_atomic(old)
    return make_folder(path, "the run directory (--out)")


def read_config(run: str | Path) -> dict:
    """RUN/config.json, checked (see `config_problem`): a damaged one is a RunError naming the file and what is
    wrong, never a KeyError later."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise RunError(f"{run} is not a vistrain run directory (no {CONFIG})")
    try:
        config = json.loads(path.read_bytes())
    except ValueError as error:  # JSON and UTF-8 errors
        raise RunError(f"{path} is damaged: not valid JSON ({error})") from None
    problem = config_problem(config)
    if problem:
        raise RunError(f"{path} is damaged: {problem}")
    return config


def config_problem(config: object) -> str | None:
    """What is wrong with a config.json's contents (the first thing found), or None when predicting can use it."""
    if not isinstance(config, dict):
        return f"it holds a JSON {type(config).__name__}, not an object"
    missing = [key for key in ("backbone", "preprocess", "classes", "task", "head") if key not in config]
    if missing:
        return f"no {', '.join(missing)}"
    task, classes, head, backbone = config["task"], config["classes"], config["head"], config["backbone"]
    if task not in TASKS:
        return f"unknown task {task!r} (tasks: {', '.join(TASKS)})"
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
            and len(set(classes)) == len(classes)):
        return f"classes is {classes!r}, not a list of distinct names"
    if task == "binary" and len(classes) != 2:
        return f"a binary model has 2 classes, not {len(classes)}"
    names = config.get("class_names", {})
    if not isinstance(names, dict):
        return f"class_names is {names!r}, not an object of class: name"
    unknown = next((c for c in names if c not in classes), None)
    if unknown is not None:
        return f"class_names names {unknown!r}, which is not one of the classes"
    unnamed = next((c for c, name in names.items() if not (isinstance(name, str) and name.strip())), None)
    if unnamed is not None:
        return f"class_names gives {unnamed!r} the name {names[unnamed]!r}, not a name"
    thresholds = config.get("thresholds")
    if task == "multilabel" and not (isinstance(thresholds, list) and len(thresholds) == len(classes)
                                     and all(type(t) in (int, float) for t in thresholds)):
        return f"a multi-label model needs a threshold per label ({len(classes)}), not {thresholds!r}"
    if not (isinstance(backbone, dict) and isinstance(backbone.get("name"), str)
            and isinstance(backbone.get("weights"), str)):
        return f"backbone is {backbone!r}, not an object with a name and weights"
    if not isinstance(head, dict) or head.get("kind") not in HEADS:
        return f"head is {head!r}, not an object whose kind is one of {', '.join(HEADS)}"
    if type(head.get("hidden")) is not int or head["hidden"] < 1:
        return f"head.hidden is {head.get('hidden')!r}, not a whole number of units"
    if type(head.get("dropout")) not in (int, float) or not 0 <= head["dropout"] < 1:
        return f"head.dropout is {head.get('dropout')!r}, not a number in [0, 1)"
    if not isinstance(config.get("fine_tune", {}), dict):
        return f"fine_tune is {config['fine_tune']!r}, not an object"
    precision, calibration = config.get("precision", "fp32"), config.get("calibration", [])
    if precision not in PRECISIONS:
        return f"precision is {precision!r}, not one of {', '.join(PRECISIONS)}"
    if not (isinstance(calibration, list) and all(
            isinstance(image, list) and len(image) == 2 and isinstance(image[0], str)
            and isinstance(image[1], str) and re.fullmatch("[0-9a-f]{64}", image[1]) for image in calibration)):
        return "calibration is not a list of [file, SHA-256] pairs"
    if precision == "int8" and not calibration:
        return "an int8 model needs its calibration images (calibration is empty)"
    parts = backbone.get("parts", [])
    if not (isinstance(parts, list) and all(isinstance(part, dict) and isinstance(part.get("name"), str)
                                            for part in parts)):
        return "backbone.parts is not a list of objects with a name and a preprocess"
    try:
        for preprocess in [config["preprocess"]] + [part.get("preprocess") for part in parts]:
            Preprocess.from_dict(preprocess)
    except ValueError as error:
        return str(error)
    return None


def part_preprocessing(config: dict, backbone: Backbone) -> Backbone:
    """A concatenation with each part's preprocessing as the run recorded it; runs from before parts took their own
    (no backbone.parts) fed every part the run's one preprocessing, and still do."""
    if not backbone.parts:
        return backbone
    recorded = config["backbone"].get("parts")
    if recorded is None:
        recorded = [{"name": part.name, "preprocess": config["preprocess"]} for part in backbone.parts]
    if [each["name"] for each in recorded] != [part.name for part in backbone.parts]:
        raise RunError(f"config.json's backbone.parts do not name the parts of {backbone.name}")
    return replace(backbone, parts=tuple(replace(part, preprocess=Preprocess.from_dict(each["preprocess"]))
                                         for part, each in zip(backbone.parts, recorded)))


def run_precision(config: dict, run: Path | None = None) -> Precision:
    """The precision of a run's features (fp32 for runs from before there was a choice), with the calibration
    images that set an int8 backbone's ranges and RUN's copies of its int8 models (`save_int8_models`)."""
    if config.get("precision", "fp32") == "fp32":
        return FP32
    return Precision(config["precision"], tuple((file, digest) for file, digest in config["calibration"]),
                     run / INT8_MODELS if run is not None else None)


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


def read_saved_predictions(run: Path, config: dict) -> Predictions:
    """RUN/predictions.csv: the validation predictions `train` wrote; a RunError when it is missing or damaged."""
    path = run / PREDICTIONS
    if not path.is_file():
        raise RunError(f"{run} has no {PREDICTIONS}; give `inspect` the images to predict them again")
    try:
        return read_predictions(path, config["classes"], config["task"], config.get("thresholds"))
    except ValueError as error:
        raise RunError(f"{error}; give `inspect` the images to predict them again") from None


def read_history(run: Path) -> list[dict]:
    """RUN/history.csv's rows ([] when it is not there), numbers as numbers; a RunError when it is damaged."""
    path = run / HISTORY
    rows = _read_run_csv(path, ["epoch", "train_loss", "val_loss"])
    header = list(rows[0]) if rows else []
    scores = {key.removeprefix("train_") for key in header if key.startswith("train_")} - {"loss"}
    if rows and (len(scores) != 1 or f"val_{scores.pop()}" not in header):
        raise RunError(f"{path} is damaged: its columns ({', '.join(header)}) do not name one score")
    numbers = [key for key in header if key == "epoch" or key.startswith(("train_", "val_"))]
    try:
        return [{**row, **{key: (int if key == "epoch" else float)(row[key]) for key in numbers}} for row in rows]
    except (TypeError, ValueError) as error:  # a short row's missing cells are None
        raise RunError(f"{path} is damaged: {error}") from None


def _read_run_csv(path: Path, needed: list[str]) -> list[dict]:
    try:
        return read_csv(path, needed)
    except ValueError as error:
        raise RunError(str(error)) from None


def package_versions() -> dict[str, str]:
    names = ["vistrain", "torch", "torchvision", "timm", "numpy", "pillow", "scikit-learn", "safetensors"]
    return {"python": platform.python_version(), **{name: version(name) for name in names}}


def class_labels_of(config: dict) -> list[str]:
    """How the run's classes are shown: by the names config.json gives them, else by their ids
    (`vistrain.data.class_names.class_labels`)."""
    return class_labels(config["classes"], config.get("class_names", {}))


def run_config(backbone: Backbone, classes: list[str], task: str, thresholds: list[float] | None, options: dict,
               best_epoch: int, fine_tune: dict | None, data: dict, calibration: tuple[tuple[str, str], ...],
               class_names: dict[str, str] | None = None, head_fit: dict | None = None,
               budget: dict | None = None) -> dict:
    """config.json: everything predicting needs (backbone with its feature stages, its preprocessing, the features'
    precision and calibration images, classes in index order and their names, task, head, thresholds), and how the
    run was trained."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backbone": {"name": backbone.name, "weights": backbone.weights, "feature_dim": backbone.feature_dim,
                     **({"stages": list(options["feature_stages"])} if options.get("feature_stages") else {}),
                     **({"parts": [{"name": part.name, "preprocess": part.preprocess.to_dict()}
                                   for part in backbone.parts]} if backbone.parts else {})},
        "preprocess": backbone.preprocess.to_dict(),
        "precision": options["precision"],
        "calibration": [list(image) for image in calibration],
        "classes": classes,
        **({"class_names": class_names} if class_names else {}),
        "task": task,
        **({"thresholds": thresholds} if thresholds else {}),
        "head": {"kind": options["head"], "hidden": options["hidden"], "dropout": options["dropout"],
                 **({"fit": head_fit} if head_fit else {})},
        "training": {**options, "task": task, "optimizer": "adam", "best_epoch": best_epoch,
                     "best_epoch_rule": "lowest validation loss, across stages"},
        **({"fine_tune": fine_tune} if fine_tune else {}),
        **({"budget": budget} if budget else {}),
        "data": data,
        "versions": package_versions(),
    }


def save_backbone(run: Path, backbone: torch.nn.Module) -> dict:
    """RUN/backbone.safetensors (a fine-tuned backbone); returns what config.json records of it."""
    save_weights(run / BACKBONE_WEIGHTS, backbone)
    return {"weights_file": BACKBONE_WEIGHTS, "sha256": sha256_file(run / BACKBONE_WEIGHTS, max_bytes=None)}


def write_trained_run(run: Path, head: torch.nn.Module, metrics: dict, history: list, stages: list[str],
                      score_name: str, predictions: Predictions, skipped: list[Skipped], config: dict,
                      leaderboard: list[dict] | None = None) -> None:
    """Every file of a trained run; config.json last, so that a run with a config is complete. `history`: the
    epochs' `EpochResult`s, `stages` their stages, `score_name` the task's score (`tasks.SCORE_NAMES`);
    `leaderboard`: a budget's rows (`write_leaderboard`)."""
    save_weights(run / WEIGHTS, head)
    write_json(run / METRICS, metrics)
    rows = [{**r.as_row(score_name), "stage": stage} for r, stage in zip(history, stages)]
    write_csv(run / HISTORY, list(rows[0]), [list(row.values()) for row in rows])
    write_predictions(run / PREDICTIONS, predictions)
    write_skipped(run / SKIPPED, skipped)
    if leaderboard:
        write_leaderboard(run / LEADERBOARD, leaderboard)
    write_json(run / CONFIG, config)


def write_leaderboard(path: Path, rows: list[dict]) -> None:
    """A budget's candidates, one a row, in the order tried (columns: candidate, changed, selection_<metric>,
    validation_<metric>, seconds, chosen, note)."""
    write_csv(path, list(rows[0]), [list(row.values()) for row in rows])


def read_leaderboard(run: Path) -> list[dict]:
    """RUN/leaderboard.csv's rows ([] for a run trained without a budget); a RunError when it is damaged."""
    return _read_run_csv(run / LEADERBOARD, ["candidate", "changed", "seconds", "chosen"])
