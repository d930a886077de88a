"""`vistrain audit`: which training images are mislabelled, off-topic or duplicated, from out-of-sample predictions.

Every image (training and validation together) gets an out-of-sample prediction: K-fold cross-validation of a
well-regularised logistic regression (ridge regression for regression targets) on the cached features, each fold
predicting images it never saw, so a wrong label cannot hide by being fitted. From them, one review queue:

* **label issues** (confident learning): the out-of-sample probabilities, blended half and half with the labels
  of each image's 10 nearest neighbours in feature space, give per class a threshold (the average
  self-confidence); the confident joint counts images labelled i that are confidently j, and the images with the
  largest margin for j are flagged, as many as that count ("prune by noise rate"). Ranked by blended
  self-confidence, lowest first, with the suggested label. Multi-label: per label; regression: the largest
  out-of-sample residuals (over 3 robust standard deviations).
* **uncertain labels**: single-label images whose blended prediction is another class although confident learning
  did not flag them: worth a look, less likely wrong.
* **off-topic images**: the mean cosine distance to the 10 nearest neighbours, as a robust z-score against the
  dataset's own distances (median and MAD); over 3 is flagged, however confident the model is about the image.
* **near duplicates by content**: feature cosine similarity of at least 0.95, within a class, across classes
  (conflicting labels) and across training and validation (leakage).

`benchmarks/audit.py` measures these choices against cleanlab on planted label flips and off-topic photos.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vistrain.analysis.audit_scores import confident_learning, duplicate_pairs, neighbours, outlier_scores, residual_scores
from vistrain.backbones import get_backbone
from vistrain.data.datasets import load_dataset
from vistrain.data.samples import SINGLE_LABEL, Dataset, Skipped
from vistrain.features.extract import extract_features
from vistrain.features.int8 import Precision, calibration_set
from vistrain.model.linear import out_of_sample
from vistrain.model.predictions import Predictions

KINDS = ("label issue", "uncertain label", "off-topic", "duplicate: conflicting labels", "duplicate: train/val leakage",
         "duplicate")
NEIGHBOURS = 10
BLEND = 0.5  # weight of the neighbours' labels against the out-of-sample probabilities
OUTLIER_Z = 3.0
DUPLICATE_COSINE = 0.95


@dataclass(frozen=True)
class Finding:
    """One row of the review queue."""

    file: Path
    given: str  # the label as given (multi-label: "a;b"; regression: the value)
    suggested: str  # the label the evidence points to ("" when there is none, e.g. off-topic)
    kind: str  # one of KINDS
    score: float  # label issue: blended self-confidence (low is suspicious); off-topic: z-score; duplicate: cosine
    split: str  # train or val
    detail: str = ""  # e.g. the other file of a duplicate pair


@dataclass
class Audit:
    findings: list[Finding]  # the review queue, in order
    predictions: Predictions  # out-of-sample, for every audited image
    metric: tuple[str, float, float, float]  # (name, value, low, high): cross-validated, 95% interval
    folds: int
    outlier_z: np.ndarray  # every image's off-topic score (robust z of its neighbour distance)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def task(self) -> str:
        return self.predictions.task

    @property
    def classes(self) -> list[str]:
        return self.predictions.classes

    @property
    def files(self) -> list[Path]:
        """Every audited image."""
        return self.predictions.files


def audit(source: str | Path, task: str = "auto", image_root: Path | None = None, backbone: str = "efficientnet_lite0",
          folds: int = 5, seed: int = 0, label_depth: int = 1, cache_dir: Path | None = None,
          decisions: Path | None = None, show_progress: bool = True, precision: str = "fp32") -> Audit:
    """Audit every image of SOURCE (a data folder or a label CSV; training and validation together), on features
    in `precision` (int8: calibrated on the training images, as `train` does)."""
    dataset = load_dataset(source, seed=seed, label_depth=label_depth, task=task, image_root=image_root,
                           decisions=decisions)
    model = get_backbone(backbone)
    samples = dataset.train + dataset.val
    calibration = calibration_set([s.path for s in dataset.train], seed) if precision == "int8" else ()
    features = extract_features([s.path for s in samples], model, model.preprocess, cache_dir,
                                show_progress=show_progress, precision=Precision(precision, calibration))
    started = time.perf_counter()
    kept = [samples[i] for i in features.kept]
    splits = ["train" if i < len(dataset.train) else "val" for i in features.kept]
    vectors = np.asarray(features.vectors, dtype=np.float32)
    targets = _targets(dataset, kept)
    folds_used, outputs = out_of_sample(vectors, targets, dataset.task, folds, seed)
    index, similarity = neighbours(vectors, NEIGHBOURS)
    findings = _label_findings(dataset, kept, splits, targets, outputs, index)
    z = outlier_scores(similarity)
    findings += [Finding(kept[i].path, _given(dataset, targets[i]), "", "off-topic", float(z[i]), splits[i])
                 for i in np.argsort(-z, kind="stable") if z[i] > OUTLIER_Z]
    findings += _duplicate_findings(dataset, kept, splits, targets, vectors)
    predictions = Predictions([s.path for s in kept], targets, outputs, dataset.classes, dataset.task)
    return Audit(findings, predictions, cross_validated_metric(predictions), folds_used, z,
                 dataset.skipped + features.skipped, time.perf_counter() - started)


def _targets(dataset: Dataset, samples: list) -> np.ndarray:
    if dataset.task in SINGLE_LABEL:
        return np.array([s.target for s in samples], dtype=int)
    return np.array([s.target for s in samples], dtype=np.float64).reshape(len(samples), -1)


def _given(dataset: Dataset, target) -> str:
    if dataset.task in SINGLE_LABEL:
        return dataset.classes[int(target)]
    if dataset.task == "multilabel":
        return ";".join(name for name, on in zip(dataset.classes, target) if on)
    return ", ".join(f"{v:.4g}" for v in target)


def _label_findings(dataset: Dataset, kept: list, splits: list[str], targets: np.ndarray, outputs: np.ndarray,
                    index: np.ndarray) -> list[Finding]:
    """Label issues, most suspicious first (see the module's docstring)."""
    found: list[tuple[float, Finding]] = []
    if dataset.task == "regression":
        for i, (score, predicted) in residual_scores(targets, outputs, index).items():
            suggested = ", ".join(f"{v:.4g}" for v in predicted)
            found.append((-score, Finding(kept[i].path, _given(dataset, targets[i]), suggested, "label issue",
                                          score, splits[i], "out-of-sample residual, robust z")))
        return [f for _, f in sorted(found, key=lambda item: item[0])]
    columns = [(None, targets, outputs)] if dataset.task in SINGLE_LABEL else \
        [(j, targets[:, j].astype(int), np.stack([1 - outputs[:, j], outputs[:, j]], 1))
         for j in range(len(dataset.classes))]
    for label, y, p in columns:
        vote = np.stack([(y[index] == c).mean(1) for c in range(p.shape[1])], 1)
        blended = (1 - BLEND) * p + BLEND * vote
        flagged = set()
        for i, suggestion, confidence in confident_learning(blended, y):
            flagged.add(i)
            if label is None:
                suggested, detail = dataset.classes[suggestion], ""
            else:
                name = dataset.classes[label]
                suggested = _given(dataset, np.where(np.arange(len(dataset.classes)) == label, suggestion,
                                                     targets[i]))
                detail = f"label {name}: {'missing' if suggestion else 'not there'}"
            found.append((confidence, Finding(kept[i].path, _given(dataset, targets[i]), suggested, "label issue",
                                              confidence, splits[i], detail)))
        if label is None:
            for i in np.flatnonzero(blended.argmax(1) != y):
                if i not in flagged:
                    confidence = float(blended[i, y[i]])
                    found.append((1 + confidence, Finding(kept[i].path, _given(dataset, targets[i]),
                                                          dataset.classes[int(blended[i].argmax())],
                                                          "uncertain label", confidence, splits[i])))
    return [f for _, f in sorted(found, key=lambda item: (item[0], str(item[1].file)))]


def _duplicate_findings(dataset: Dataset, kept: list, splits: list[str], targets: np.ndarray,
                        vectors: np.ndarray) -> list[Finding]:
    rows = []
    for i, j, cosine in duplicate_pairs(vectors, DUPLICATE_COSINE):
        same_label = np.array_equal(targets[i], targets[j])
        kind = ("duplicate" if splits[i] == splits[j] else "duplicate: train/val leakage") if same_label \
            else "duplicate: conflicting labels"
        suggested = "" if same_label else _given(dataset, targets[j])
        rows.append(Finding(kept[i].path, _given(dataset, targets[i]), suggested, kind, cosine, splits[i],
                            f"{kept[j].path} ({splits[j]}, {_given(dataset, targets[j])})"))
    return sorted(rows, key=lambda f: (KINDS.index(f.kind), -f.score, str(f.file)))


def cross_validated_metric(p: Predictions) -> tuple[str, float, float, float]:
    """The out-of-sample headline figure with a 95% interval: accuracy (Wilson), micro F1 or MAE (bootstrap)."""
    n = len(p.files)
    if p.task in SINGLE_LABEL:
        correct = int((p.outputs.argmax(1) == p.targets).sum())
        return ("accuracy", correct / n, *wilson_interval(correct, n))
    rng = np.random.default_rng(0)
    if p.task == "multilabel":
        def value(rows):
            predicted, truth = p.outputs[rows] >= 0.5, p.targets[rows] > 0.5
            hits = (predicted & truth).sum()
            return 2 * hits / max(1, predicted.sum() + truth.sum())
        name = "micro F1"
    else:
        def value(rows):
            return float(np.abs(p.outputs[rows] - p.targets[rows]).mean())
        name = "MAE"
    samples = [value(rng.integers(0, n, n)) for _ in range(200)]
    return (name, float(value(np.arange(n))), float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5)))


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    phat = successes / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
