"""`vistrain evaluate`: score a trained run on labelled images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from vistrain.core.device import ignore
from vistrain.data.datasets import load_labelled
from vistrain.data.samples import DataError, Skipped
from vistrain.model.metrics import task_metrics
from vistrain.model.predictions import Predictions
from vistrain.model.predictor import Predictor

if TYPE_CHECKING:
    import torch


@dataclass
class Evaluation:
    """What `evaluate` returns: the task's metrics, each image's prediction, and the files left out."""

    metrics: dict  # the task's metrics (see `vistrain.model.metrics.task_metrics`; classes by name), with "task"
    predictions: Predictions
    skipped: list[Skipped]


def evaluate(run: str | Path, data: str | Path, image_root: Path | None = None, cache_dir: Path | None = None,
             tta: bool = False, show_progress: bool = True, decisions: Path | None = None,
             device: torch.device | None = None, on_halve: Callable[[int], None] = ignore) -> Evaluation:
    """The model in RUN scored on DATA (a folder: its val/ folder if it has one, else all of it; or a label CSV:
    its val rows if it has a split column, else all rows). `tta`: average each image's and its mirror's outputs.
    Review `decisions` (a file; default: the one beside DATA, if any) are honoured. The backbone runs on `device`
    (see `Predictor.from_run`)."""
    predictor = Predictor.from_run(run, device, on_halve)
    samples, skipped = load_labelled(data, predictor.classes, predictor.task, image_root,
                                     decisions, cache_dir)
    target_of = {s.path: s.target for s in samples}
    result = predictor.predict([s.path for s in samples], cache_dir, show_progress=show_progress, tta=tta)
    if not result.paths:
        raise DataError(f"none of the {len(samples)} image(s) in {data} could be read; nothing to evaluate "
                        f"(first: {result.skipped[0].path}: {result.skipped[0].reason})" if result.skipped
                        else f"{data} holds no labelled images")
    targets = np.array([target_of[p] for p in result.paths])
    metrics = task_metrics(predictor.task, targets, result.outputs, predictor.labels, predictor.thresholds)
    metrics["task"] = predictor.task
    predictions = Predictions(result.paths, targets, result.outputs, predictor.classes, predictor.task,
                              predictor.thresholds)
    return Evaluation(metrics, predictions, skipped + result.skipped)
