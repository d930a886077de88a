"""A trained run, loaded: its backbone (fine-tuned, if it was) with its exact preprocessing from config.json, then its
head; predicts image files through the feature cache."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from vistrain.backbones import Backbone, get_backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.core.console import console
from vistrain.core.files import sha256_file
from vistrain.data.files import list_files
from vistrain.data.samples import Skipped
from vistrain.features.extract import extract_features
from vistrain.features.transforms import View
from vistrain.model import tasks
from vistrain.model.heads import build_head
from vistrain.model.run_dir import BACKBONE_WEIGHTS, WEIGHTS, RunError, load_weights, read_config


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
                f"[yellow]warning:[/] the run was trained with {escape(config['backbone']['weights'])}, "
                f"this machine has {escape(backbone.weights)}; predictions may differ"
            )
        if config.get("fine_tune", {}).get("sha256"):  # fine-tuning beat the frozen head: the run's own backbone
            backbone = fine_tuned_backbone(backbone, Path(run), config["fine_tune"]["sha256"])
        head_config = config["head"]
        head = build_head(
            head_config["kind"], backbone.feature_dim, tasks.output_units(config["task"], len(config["classes"])),
            head_config["hidden"], head_config["dropout"], rescale=config["task"] == "regression",
        )
        head.load_state_dict(load_weights(Path(run) / WEIGHTS))
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


    def check_threshold(self, threshold: float | None) -> None:
        """A `--threshold` is for classifiers: refuse one for a regression model."""
        if threshold is not None and self.task == "regression":
            raise ValueError("--threshold does not apply to a regression model")

    def describe(self, outputs: np.ndarray, threshold: float | None = None, k: int = 3) -> list[dict]:
        """One plain dict per image: `class` (the top class; the labels over their thresholds joined by ';';
        or the value(s)), `probability` (single-label: of that class), `uncertain` and `top` (name, output)
        pairs. `threshold`: single-label, abstain below it; multilabel, one threshold for every label instead of
        the tuned ones."""
        self.check_threshold(threshold)
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


def fine_tuned_backbone(base: Backbone, run: Path, sha256: str) -> Backbone:
    """`base` with the weights a fine-tuned run saved in RUN/backbone.safetensors (checked against `sha256`).
    Its `build` gives the feature extractor (no ImageNet classifier) and its `weights` name the file's
    SHA-256, so the feature cache keeps its features apart from the pretrained backbone's."""
    path = run / BACKBONE_WEIGHTS
    if not path.is_file():
        raise RunError(f"{run} was fine-tuned but has no {BACKBONE_WEIGHTS}")
    if sha256_file(path, max_bytes=None) != sha256:
        raise RunError(f"{path} is not the file this run saved (its SHA-256 differs from config.json's)")

    def build() -> nn.Module:
        model = base.build()
        model.reset_classifier(0)
        model.load_state_dict(load_weights(path))
        return model.eval()

    return replace(base, build=build, weights=f"{base.weights}, fine-tuned sha256:{sha256}")


def expand_paths(inputs: list[str | Path]) -> tuple[list[Path], list[Skipped]]:
    """Files as given (a missing one is reported when it is read) and every non-hidden file inside folders; and the
    links to folders found inside them, as skipped (`list_files`)."""
    paths: list[Path] = []
    links: list[Skipped] = []
    for item in map(Path, inputs):
        found, skipped = list_files(item) if item.is_dir() else ([item], [])
        paths += found
        links += skipped
    return paths, links
