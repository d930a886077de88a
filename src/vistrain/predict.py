"""Use a trained run: its backbone and its exact preprocessing from config.json, then its head."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from vistrain import tasks
from vistrain.backbones import Backbone, get_backbone
from vistrain.console import console
from vistrain.data import Skipped, list_files
from vistrain.features import extract_features
from vistrain.fine_tune import fine_tuned_backbone
from vistrain.heads import build_head
from vistrain.preprocess import Preprocess
from vistrain.run_dir import WEIGHTS, RunError, read_config
from vistrain.transforms import View


@dataclass
class ImagePredictions:
    """Outputs for the readable files (class or label probabilities, or values; see `tasks.outputs`), and the
    files that could not be read."""

    paths: list[Path]
    outputs: np.ndarray  # (n, n_outputs)
    skipped: list[Skipped]


class Predictor:
    """A trained model loaded from its run directory (with its fine-tuned backbone, if it has one)."""

    def __init__(self, config: dict, head: nn.Module, backbone: Backbone):
        self.config = config
        self.classes: list[str] = config["classes"]
        self.task: str = config["task"]
        self.thresholds: list[float] | None = config.get("thresholds")  # multilabel, tuned on validation
        self.preprocess = Preprocess.from_dict(config["preprocess"])
        self.backbone = backbone
        self.head = head.eval()

    @classmethod
    def from_run(cls, run: str | Path) -> "Predictor":
        config = read_config(run)
        backbone = get_backbone(config["backbone"]["name"])
        if backbone.weights != config["backbone"]["weights"]:
            console.print(
                f"[yellow]warning:[/] the run was trained with {config['backbone']['weights']}, "
                f"this machine has {backbone.weights}; predictions may differ"
            )
        if "fine_tune" in config:  # the run's own backbone weights
            backbone = fine_tuned_backbone(backbone, Path(run), config["fine_tune"]["sha256"])
        head_config = config["head"]
        head = build_head(
            head_config["kind"], backbone.feature_dim, tasks.output_units(config["task"], len(config["classes"])),
            head_config["hidden"], head_config["dropout"], rescale=config["task"] == "regression",
        )
        head.load_state_dict(load_head_weights(run))
        return cls(config, head, backbone)

    @torch.no_grad()
    def outputs(self, features: np.ndarray) -> np.ndarray:
        """The head's outputs for backbone features (see `tasks.outputs`)."""
        return tasks.outputs(self.task, self.head(torch.from_numpy(features))).numpy()

    def predict(self, paths: list[Path], cache_dir: Path | None = None, show_progress: bool = True,
                tta: bool = False) -> ImagePredictions:
        """Predict image files (features cached like training's); unreadable files are returned as skipped.
        `tta`: average the outputs for each image and its mirror image (test-time augmentation)."""
        features = extract_features(paths, self.backbone, self.preprocess, cache_dir, show_progress=show_progress)
        outputs = self.outputs(features.vectors)
        if tta:
            mirrored = extract_features([paths[i] for i in features.kept], self.backbone, self.preprocess, cache_dir,
                                        show_progress=show_progress, view=View("flip"))
            outputs = (outputs + self.outputs(mirrored.vectors)) / 2
        return ImagePredictions([paths[i] for i in features.kept], outputs, features.skipped)


    def describe(self, outputs: np.ndarray, threshold: float | None = None, k: int = 3) -> list[dict]:
        """One plain dict per image: `class` (the top class; the labels over their thresholds joined by ';';
        or the value(s)), `probability` (single-label: of that class), `uncertain` and `top` (name, output)
        pairs. `threshold`: single-label, abstain below it; multilabel, one threshold for every label instead of
        the tuned ones."""
        if threshold is not None and self.task == "regression":
            raise ValueError("--threshold does not apply to a regression model")
        rows = []
        for row in outputs:
            if self.task == "regression":
                rows.append({"class": ", ".join(f"{v:.6g}" for v in row), "probability": None, "uncertain": False,
                             "top": [(name, float(v)) for name, v in zip(self.classes, row)]})
                continue
            top = [(self.classes[i], float(row[i])) for i in np.argsort(-row, kind="stable")[:k]]
            if self.task == "multilabel":
                cut = np.full(len(row), threshold) if threshold is not None else np.asarray(self.thresholds)
                chosen = [name for name, p, t in zip(self.classes, row, cut) if p >= t]
                rows.append({"class": ";".join(chosen), "probability": None, "uncertain": False, "top": top})
            else:
                rows.append({"class": top[0][0], "probability": top[0][1], "top": top,
                             "uncertain": threshold is not None and top[0][1] < threshold})
        return rows


def load_head_weights(run: str | Path) -> dict[str, torch.Tensor]:
    path = Path(run) / WEIGHTS
    if not path.is_file():
        raise RunError(f"{run} has no {WEIGHTS}")
    return load_file(path)


def expand_paths(inputs: list[str | Path]) -> list[Path]:
    """Files as given (a missing one is reported when it is read), and every non-hidden file inside folders."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        paths.extend(list_files(item) if item.is_dir() else [item])
    return paths
