"""A trained run, loaded: its backbone (fine-tuned, if it was) with its exact preprocessing and its features'
precision from config.json, then its head; predicts image files through the feature cache, the backbone running on
a device of its own (`core.device`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from vistrain.backbones import Backbone, BackboneUnavailable, get_backbone
from vistrain.backbones.multi_depth import with_stages
from vistrain.core.device import ignore
from vistrain.core.errors import OptionError
from vistrain.core.files import sha256_file
from vistrain.core.messages import warn
from vistrain.data.listing import NOT_UTF8, is_utf8, list_files
from vistrain.data.samples import Skipped
from vistrain.features.extract import extract_features
from vistrain.features.transforms import View
from vistrain.model import tasks
from vistrain.model.heads import build_head
from vistrain.model.run_config import RunConfig
from vistrain.model.run_dir import (BACKBONE_WEIGHTS, CONFIG, WEIGHTS, RunError, load_weights, part_preprocessing,
                                    read_config, run_precision)
from vistrain.model.run_state import require_complete


@dataclass
class ImagePredictions:
    """Outputs for the readable files (class or label probabilities, or values; see `tasks.outputs`), and the
    files that could not be read."""

    paths: list[Path]
    outputs: np.ndarray  # (n, n_outputs)
    skipped: list[Skipped]


class Predictor:
    """A trained model loaded from its run directory (with its fine-tuned backbone, if it has one)."""

    def __init__(self, config: RunConfig, head: nn.Module, backbone: Backbone, device: torch.device | None = None,
                 on_halve: Callable[[int], None] = ignore, run: Path | None = None):
        self.config = config
        self.classes: list[str] = list(config.classes)
        self.labels: list[str] = config.labels  # how the classes are shown: their names, if they have any
        self.task: str = config.task
        self.thresholds: tuple[float, ...] | None = config.thresholds  # multilabel, tuned on validation
        self.preprocess = config.preprocess
        self.precision = run_precision(config, run)  # as the head was trained: fp32 or int8 features, never mixed
        self.backbone = backbone
        self.head = head.eval()
        self.device = device  # where the backbone runs (see `extract_features`); None: the CPU
        self.on_halve = on_halve  # told when a batch of images had to be cut to fit the device's memory

    @classmethod
    def from_run(cls, run: str | Path, device: torch.device | None = None,
                 on_halve: Callable[[int], None] = ignore) -> "Predictor":
        """The model of a complete run (`vistrain.model.run_state.require_complete`), its backbone to run on
        `device` (`core.device.resolve_device`; None: the CPU)."""
        config = read_config(run)
        require_complete(Path(run))
        try:
            backbone = get_backbone(config.backbone.name)
        except BackboneUnavailable as error:
            raise BackboneUnavailable(f"{Path(run) / CONFIG} names a backbone this machine cannot load: {error}") \
                from None
        backbone = part_preprocessing(config, with_stages(backbone, config.backbone.stages))
        if backbone.weights != config.backbone.weights:
            warn(f"warning: the run was trained with {config.backbone.weights}, this machine has "
                 f"{backbone.weights}; predictions may differ")
        if config.tuned_backbone:  # fine-tuning beat the frozen head: the run's own backbone
            backbone = fine_tuned_backbone(backbone, Path(run), config.tuned_backbone)
        head = load_head(Path(run), config, backbone)
        return cls(config, head, backbone, device, on_halve, Path(run))

    @torch.no_grad()
    def outputs(self, features: np.ndarray) -> np.ndarray:
        """The head's outputs for backbone features (see `tasks.outputs`)."""
        return tasks.outputs(self.task, self.head(torch.from_numpy(features))).numpy()

    def predict(self, paths: list[Path], cache_dir: Path | None = None, show_progress: bool = True,
                tta: bool = False) -> ImagePredictions:
        """Predict image files (features cached like training's); unreadable files are returned as skipped.
        `tta`: average the outputs for each image and its mirror image (test-time augmentation)."""
        extract = partial(extract_features, backbone=self.backbone, preprocess=self.preprocess, cache_dir=cache_dir,
                          show_progress=show_progress, precision=self.precision, device=self.device,
                          on_halve=self.on_halve)
        features = extract(paths)
        outputs = self.outputs(features.vectors)
        if tta:
            mirrored = extract([paths[i] for i in features.kept], view=View("flip"))
            outputs = (outputs + self.outputs(mirrored.vectors)) / 2
        return ImagePredictions([paths[i] for i in features.kept], outputs, features.skipped)


    def check_threshold(self, threshold: float | None) -> None:
        """A `threshold` is for classifiers: refuse one for a regression model."""
        if threshold is not None and self.task == "regression":
            raise OptionError("{threshold} does not apply to a regression model")

    def describe(self, outputs: np.ndarray, threshold: float | None = None, k: int = 3) -> list[dict]:
        """One plain dict per image: `class` (the top class; the labels over their thresholds joined by ';';
        or the value(s)), `probability` (single-label: of that class), `uncertain` and `top` (name, output)
        pairs; classes are shown by their names, if the run has them (`labels`). `threshold`: single-label,
        abstain below it; multilabel, one threshold for every label instead of the tuned ones."""
        self.check_threshold(threshold)
        rows = []
        for row in outputs:
            if self.task == "regression":
                rows.append({"class": ", ".join(f"{v:.6g}" for v in row), "probability": None, "uncertain": False,
                             "top": [(name, float(v)) for name, v in zip(self.labels, row)]})
                continue
            top = [(self.labels[i], float(row[i])) for i in np.argsort(-row, kind="stable")[:k]]
            if self.task == "multilabel":
                cut = np.full(len(row), threshold) if threshold is not None else np.asarray(self.thresholds)
                chosen = [name for name, p, t in zip(self.labels, row, cut) if p >= t]
                rows.append({"class": ";".join(chosen), "probability": None, "uncertain": False, "top": top})
            else:
                rows.append({"class": top[0][0], "probability": top[0][1], "top": top,
                             "uncertain": threshold is not None and top[0][1] < threshold})
        return rows


def load_head(run: Path, config: RunConfig, backbone: Backbone) -> nn.Module:
    """The head config.json describes, with the weights of RUN/head.safetensors; a RunError when they do not fit
    (another number of classes, another hidden size, another backbone)."""
    spec, task, classes = config.head, config.task, config.classes
    units = tasks.output_units(task, len(classes))
    head = build_head(spec.kind, backbone.feature_dim, units, spec.hidden, spec.dropout,
                      rescale=task == "regression")
    path = run / WEIGHTS
    weights = load_weights(path)
    expected = {name: tuple(tensor.shape) for name, tensor in head.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in weights.items()}
    if found != expected:
        layers = [f"{name}.weight" for name, layer in head.named_children() if isinstance(layer, nn.Linear)]
        first, last = found.get(layers[0]), found.get(layers[-1])
        if set(found) != set(expected):
            why = f"its layers ({', '.join(sorted(found))}) are not those of a {spec.kind} head for {task}"
        elif last[0] != units:
            why = f"it has {last[0]} output(s); {len(classes)} classes ({task}) need {units}"
        elif first[1] != backbone.feature_dim:
            why = f"it takes {first[1]} features; the backbone {backbone.name} gives {backbone.feature_dim}"
        else:
            why = f"its hidden layer has {first[0]} units, not {spec.hidden}"
        raise RunError(f"{path} does not fit {run / CONFIG}: {why}")
    head.load_state_dict(weights)
    return head


def fine_tuned_backbone(base: Backbone, run: Path, sha256: str) -> Backbone:
    """`base` with the weights a fine-tuned run saved in RUN/backbone.safetensors (checked against `sha256`).
    Its `build` gives the feature extractor (no ImageNet classifier) and its `weights` name the file's
    SHA-256, so the feature cache keeps its features apart from the pretrained backbone's."""
    path = run / BACKBONE_WEIGHTS
    if not path.is_file():
        raise RunError(f"{run} was fine-tuned but has no {BACKBONE_WEIGHTS}")
    weights = load_weights(path)  # a damaged file is refused here, not when features are first computed
    if sha256_file(path, max_bytes=None) != sha256:
        raise RunError(f"{path} is not the file this run saved (its SHA-256 differs from config.json's)")

    def build() -> nn.Module:
        model = base.build()
        model.reset_classifier(0)
        model.load_state_dict(weights)
        return model.eval()

    return replace(base, build=build, weights=f"{base.weights}, fine-tuned sha256:{sha256}", parts=())


def expand_paths(inputs: list[str | Path]) -> tuple[list[Path], list[Skipped]]:
    """Files as given (a missing one is reported when it is read) and every non-hidden file inside folders; and, as
    skipped, the links to folders found inside them and the names that are not UTF-8 (`list_files`)."""
    paths: list[Path] = []
    links: list[Skipped] = []
    for item in map(Path, inputs):
        if not is_utf8(str(item)):
            links.append(Skipped(item, NOT_UTF8))
            continue
        found, skipped = list_files(item) if item.is_dir() else ([item], [])
        paths += found
        links += skipped
    return paths, links
