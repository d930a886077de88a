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
* **near duplicates by content**: images whose features have a cosine similarity of at least 0.95 are grouped
  (transitively: a group of 5,000 near-identical images is one group, not 12 million pairs), and each image of a
  group is listed once, with its group: across classes (conflicting labels), across training and validation
  (leakage), or within a class.

`benchmarks/audit.py` measures these choices against cleanlab on planted label flips and off-topic photos.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vistrain.analysis.audit_scores import confident_learning, outlier_scores, residual_scores, similarities
from vistrain.analysis.ranking import format_values, label_view
from vistrain.backbones import get_backbone
from vistrain.core.files import default_cache_dir
from vistrain.data.datasets import load_dataset
from vistrain.data.samples import SINGLE_LABEL, DataError, Dataset, Skipped
from vistrain.features.extract import extract_features
from vistrain.features.int8 import calibration_set
from vistrain.features.runtime import chosen_precision
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
    detail: str = ""  # e.g. a duplicate's group and the image closest to it
    group: int = 0  # duplicates: the number of the image's group (1, 2, ...)


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
          decisions: Path | None = None, show_progress: bool = True, precision: str = "auto") -> Audit:
    """Audit every image of SOURCE (a data folder or a label CSV; training and validation together), on features
    in `precision` (int8: calibrated on the training images, as `train` does; auto as `train` resolves it)."""
    dataset = load_dataset(source, seed=seed, label_depth=label_depth, task=task, image_root=image_root,
                           decisions=decisions)
    model = get_backbone(backbone)
    samples = dataset.train + dataset.val
    calibration = calibration_set([s.path for s in dataset.train], seed)
    computed, _ = chosen_precision(precision, calibration, model, cache_dir or default_cache_dir())
    features = extract_features([s.path for s in samples], model, model.preprocess, cache_dir,
                                show_progress=show_progress, precision=computed)
    started = time.perf_counter()
    kept = [samples[i] for i in features.kept]
    splits = ["train" if i < len(dataset.train) else "val" for i in features.kept]
    vectors = np.asarray(features.vectors, dtype=np.float32)
    targets = _targets(dataset, kept)
    _enough_per_class(dataset, targets, folds)
    folds_used, outputs = out_of_sample(vectors, targets, dataset.task, folds, seed)
    index, similarity, groups = similarities(vectors, NEIGHBOURS, DUPLICATE_COSINE)
    predictions = Predictions([s.path for s in kept], targets, outputs, dataset.classes, dataset.task)
    findings = _label_findings(dataset, predictions, splits, index)
    z = outlier_scores(similarity)
    findings += [Finding(kept[i].path, _given(dataset, targets[i]), "", "off-topic", float(z[i]), splits[i])
                 for i in np.argsort(-z, kind="stable") if z[i] > OUTLIER_Z]
    findings += _duplicate_findings(dataset, kept, splits, targets, (index, similarity, groups))
    return Audit(findings, predictions, cross_validated_metric(predictions), folds_used, z,
                 dataset.skipped + features.skipped, time.perf_counter() - started)


def _enough_per_class(dataset: Dataset, targets: np.ndarray, folds: int) -> None:
    """A DataError, in words and with what to do, when a class has fewer than 2 readable images: cross-validation
    cannot predict it (scikit-learn would say `n_splits=2 cannot be greater than the number of members`)."""
    if dataset.task not in SINGLE_LABEL:
        return
    counts = np.bincount(targets, minlength=len(dataset.classes))
    if counts.min() < 2:
        name = dataset.classes[int(counts.argmin())]
        raise DataError(f"class {name} has {counts.min()} readable image(s): the audit predicts every image with a "
                        f"model trained on the other folds, so each class needs at least 2 (and a class with fewer "
                        f"images than --folds {folds} is cross-validated in as many folds as it has). Add images of "
                        f"{name}, or leave it out of the data")


def _targets(dataset: Dataset, samples: list) -> np.ndarray:
    if dataset.task in SINGLE_LABEL:
        return np.array([s.target for s in samples], dtype=int)
    return np.array([s.target for s in samples], dtype=np.float64).reshape(len(samples), -1)


def _given(dataset: Dataset, target) -> str:
    if dataset.task in SINGLE_LABEL:
        return dataset.classes[int(target)]
    if dataset.task == "multilabel":
        return ";".join(name for name, on in zip(dataset.classes, target) if on)
    return format_values(target)


def _label_findings(dataset: Dataset, p: Predictions, splits: list[str], index: np.ndarray) -> list[Finding]:
    """Label issues, most suspicious first (see the module's docstring), from the out-of-sample predictions `p`."""
    found: list[tuple[float, Finding]] = []
    if dataset.task == "regression":
        for i, (score, predicted) in residual_scores(p.targets, p.outputs, index).items():
            found.append((-score, Finding(p.files[i], _given(dataset, p.targets[i]), format_values(predicted),
                                          "label issue", score, splits[i], "out-of-sample residual, robust z")))
        return [f for _, f in sorted(found, key=lambda item: item[0])]
    views = [(None, p)] if dataset.task in SINGLE_LABEL else [(j, label_view(p, j)) for j in range(len(p.classes))]
    for label, view in views:
        y = view.targets
        vote = np.stack([(y[index] == c).mean(1) for c in range(view.outputs.shape[1])], 1)
        blended = (1 - BLEND) * view.outputs + BLEND * vote
        flagged = set()
        for i, suggestion, confidence in confident_learning(blended, y):
            flagged.add(i)
            if label is None:
                suggested, detail = dataset.classes[suggestion], ""
            else:
                suggested = _given(dataset, np.where(np.arange(len(p.classes)) == label, suggestion, p.targets[i]))
                detail = f"label {p.classes[label]}: {'missing' if suggestion else 'not there'}"
            found.append((confidence, Finding(p.files[i], _given(dataset, p.targets[i]), suggested, "label issue",
                                              confidence, splits[i], detail)))
        if label is None:
            for i in np.flatnonzero(blended.argmax(1) != y):
                if i not in flagged:
                    confidence = float(blended[i, y[i]])
                    found.append((1 + confidence, Finding(p.files[i], _given(dataset, p.targets[i]),
                                                          dataset.classes[int(blended[i].argmax())],
                                                          "uncertain label", confidence, splits[i])))
    return [f for _, f in sorted(found, key=lambda item: (item[0], str(item[1].file)))]


def _duplicate_findings(dataset: Dataset, kept: list, splits: list[str], targets: np.ndarray,
                        alike: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[Finding]:
    """Each image of a duplicate group once, with its group's number, its cosine to the image closest to it (in its
    group), and the label most of the others have when it is not its own; the group's kind: conflicting labels,
    train/val leakage, or a plain duplicate."""
    index, similarity, groups = alike
    members: dict[int, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[int(group)].append(i)
    rows = []
    for number, group in enumerate((m for _, m in sorted(members.items()) if len(m) > 1), 1):
        labels = Counter(_given(dataset, targets[i]) for i in group)
        kind = "duplicate: conflicting labels" if len(labels) > 1 else \
            "duplicate: train/val leakage" if len({splits[i] for i in group}) > 1 else "duplicate"
        for i in group:
            given, closest = _given(dataset, targets[i]), int(index[i, 0])
            majority = (labels - Counter([given])).most_common(1)  # among the others
            suggested = majority[0][0] if majority and majority[0][0] != given else ""
            detail = (f"group {number} of {len(group)} images ({', '.join(f'{n} {name}' for name, n in labels.items())})"
                      f"; closest: {kept[closest].path} ({splits[closest]}, {_given(dataset, targets[closest])})")
            rows.append(Finding(kept[i].path, given, suggested, kind, float(similarity[i, 0]), splits[i], detail,
                                number))
    return sorted(rows, key=lambda f: (KINDS.index(f.kind), f.group, -f.score, str(f.file)))


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
