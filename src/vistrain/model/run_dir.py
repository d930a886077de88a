"""The run directory, in one place: what a trained run holds, and how each file is written and read back.

    config.json           backbone, preprocessing, classes in index order, task, head, training settings, data,
                          versions (written last: a run with a config.json is complete)
    head.safetensors      the trained head's weights (no pickle anywhere)
    backbone.safetensors  with a fine-tuning that beat the frozen head: the fine-tuned backbone (its SHA-256 is in
                          config.json)
    metrics.json          validation metrics of the best epoch, timings
    history.csv           loss and score per epoch, with its stage (frozen or fine-tune)
    predictions.csv       validation images: file, true, predicted, an output per class or label (`predictions`)
    skipped.csv           files left out, with the reason
    report.html           the inspection report (`vistrain.analysis.report`)
    checkpoint.pt         only while a run is unfinished: what `train --resume` needs

Every file is written atomically (`vistrain.core.files`).
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from vistrain.core.files import read_csv, sha256_file, write_atomic, write_csv, write_json
from vistrain.data.samples import Skipped
from vistrain.model.predictions import Predictions, write_predictions

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
CHECKPOINT = "checkpoint.pt"
RUN_FILES = (CONFIG, CHECKPOINT, WEIGHTS, BACKBONE_WEIGHTS, METRICS, HISTORY, PREDICTIONS, SKIPPED, REPORT)


class RunError(ValueError):
    """The run directory is missing, incomplete or damaged; the message names the file."""


def new_run_dir(out: str | Path | None, overwrite: bool = False) -> Path:
    """Create the run directory: `out`, or runs/<timestamp>. An existing non-empty one needs `overwrite`, and then
    loses the files of the run it held (config.json first, so that it never passes for complete), nothing else."""
    path = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} is a file, not a folder; choose another --out")
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RunError(f"{path} already holds files; choose another --out or pass --overwrite")
        for name in RUN_FILES:
            (path / name).unlink(missing_ok=True)
        for extra in path.glob("inspect_*.csv"):
            extra.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_config(run: str | Path) -> dict:
    path = Path(run) / CONFIG
    if not path.is_file():
        raise RunError(f"{run} is not a vistrain run directory (no {CONFIG})")
    return json.loads(path.read_text())


def save_weights(path: Path, module: torch.nn.Module) -> None:
    """A module's whole state dict as safetensors, written atomically."""
    from safetensors.torch import save  # torch: only where weights are written

    write_atomic(path, save({k: v.contiguous() for k, v in module.state_dict().items()}))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file written by `save_weights`."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise RunError(f"{path.parent} has no {path.name}")
    return load_file(path)


def write_skipped(path: Path, skipped: list[Skipped]) -> None:
    write_csv(path, ["file", "reason"], [[str(s.path), s.reason] for s in skipped])


def read_skipped(run: Path) -> list[Skipped]:
    return [Skipped(Path(row["file"]), row["reason"]) for row in read_csv(run / SKIPPED)]


def package_versions() -> dict[str, str]:
    names = ["vistrain", "torch", "torchvision", "timm", "numpy", "pillow", "scikit-learn", "safetensors"]
    return {"python": platform.python_version(), **{name: version(name) for name in names}}


def run_config(backbone: Backbone, classes: list[str], task: str, thresholds: list[float] | None, options: dict,
               best_epoch: int, fine_tune: dict | None, data: dict) -> dict:
    """config.json: everything predicting needs (backbone, its preprocessing, classes in index order, task, head,
    thresholds), and how the run was trained."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backbone": {"name": backbone.name, "weights": backbone.weights, "feature_dim": backbone.feature_dim},
        "preprocess": backbone.preprocess.to_dict(),
        "classes": classes,
        "task": task,
        **({"thresholds": thresholds} if thresholds else {}),
        "head": {"kind": options["head"], "hidden": options["hidden"], "dropout": options["dropout"]},
        "training": {**options, "task": task, "optimizer": "adam", "best_epoch": best_epoch,
                     "best_epoch_rule": "lowest validation loss, across stages"},
        **({"fine_tune": fine_tune} if fine_tune else {}),
        "data": data,
        "versions": package_versions(),
    }


def save_backbone(run: Path, backbone: torch.nn.Module) -> dict:
    """RUN/backbone.safetensors (a fine-tuned backbone); returns what config.json records of it."""
    save_weights(run / BACKBONE_WEIGHTS, backbone)
    return {"weights_file": BACKBONE_WEIGHTS, "sha256": sha256_file(run / BACKBONE_WEIGHTS, max_bytes=None)}


def write_trained_run(run: Path, head: torch.nn.Module, metrics: dict, history: list, stages: list[str],
                      score_name: str, predictions: Predictions, skipped: list[Skipped], config: dict) -> None:
    """Every file of a trained run; config.json last, so that a run with a config is complete. `history`: the
    epochs' `EpochResult`s, `stages` their stages, `score_name` the task's score (`tasks.SCORE_NAMES`)."""
    save_weights(run / WEIGHTS, head)
    write_json(run / METRICS, metrics)
    rows = [{**r.as_row(score_name), "stage": stage} for r, stage in zip(history, stages)]
    write_csv(run / HISTORY, list(rows[0]), [list(row.values()) for row in rows])
    write_predictions(run / PREDICTIONS, predictions)
    write_skipped(run / SKIPPED, skipped)
    write_json(run / CONFIG, config)
