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
from vistrain.heads import build_head
from vistrain.preprocess import Preprocess
from vistrain.run_dir import WEIGHTS, RunError, read_config


@dataclass
class ImagePredictions:
    """Class probabilities for the readable files, and the files that could not be read."""

    paths: list[Path]
    probabilities: np.ndarray  # (n, n_classes)
    skipped: list[Skipped]


class Predictor:
    """A trained model loaded from its run directory."""

    def __init__(self, config: dict, head: nn.Module, backbone: Backbone):
        self.config = config
        self.classes: list[str] = config["classes"]
        self.task: str = config["task"]
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
        head_config = config["head"]
        head = build_head(
            head_config["kind"], backbone.feature_dim, tasks.output_units(config["task"], len(config["classes"])),
            head_config["hidden"], head_config["dropout"],
        )
        head.load_state_dict(load_head_weights(run))
        return cls(config, head, backbone)

    @torch.no_grad()
    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities from backbone features."""
        return tasks.probabilities(self.task, self.head(torch.from_numpy(features))).numpy()

    def predict(self, paths: list[Path], cache_dir: Path | None = None, show_progress: bool = True) -> ImagePredictions:
        """Predict image files (features cached like training's); unreadable files are returned as skipped."""
        features = extract_features(paths, self.backbone, self.preprocess, cache_dir, show_progress=show_progress)
        return ImagePredictions([paths[i] for i in features.kept], self.probabilities(features.vectors), features.skipped)


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
