"""What the model is sure of, unsure of, and wrong about: the course's three questions, plus calibration.

Everything here works on predictions (file, true class, class probabilities); nothing runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vistrain.model.predictions import Predictions

LISTS = ("most_confident", "least_confident", "confidently_wrong")
LIST_TITLES = {
    "most_confident": "most confident",
    "least_confident": "least confident",
    "confidently_wrong": "confidently wrong",
    "label_errors": "possible label errors",
    "largest_errors": "largest errors",
}


@dataclass(frozen=True)
class Entry:
    """One image in a ranked list: classes with probabilities, or (regression) values with the error."""

    file: Path
    true: str
    predicted: str
    probability: float | None = None  # of the predicted class
    label_probability: float | None = None  # of the given (true) class
    error: float | None = None  # regression: |predicted - true|, summed over targets


def margin(p: Predictions) -> np.ndarray:
    """Distance from the decision boundary: top probability minus the runner-up, or (binary with a threshold)
    twice the distance of p from the threshold."""
    if p.task == "binary" and p.thresholds:
        return 2 * np.abs(p.outputs[:, 1] - p.thresholds[0])
    ordered = np.sort(p.outputs, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def entry(p: Predictions, i: int) -> Entry:
    """Image i as a list entry."""
    if p.task == "regression":
        return Entry(p.files[i], format_values(p.targets[i]), format_values(p.outputs[i]),
                     error=float(np.abs(p.outputs[i] - p.targets[i]).sum()))
    return Entry(p.files[i], p.classes[p.targets[i]], p.classes[p.predicted[i]],
                 float(p.outputs[i, p.predicted[i]]), float(p.outputs[i, p.targets[i]]))


def label_view(p: Predictions, j: int) -> Predictions:
    """Multilabel: label j as a binary problem ("not <label>" / "<label>") at its threshold."""
    name, probability = p.classes[j], p.outputs[:, j]
    return Predictions(p.files, p.targets[:, j].astype(int), np.stack([1 - probability, probability], axis=1),
                       [f"not {name}", name], "binary", [p.thresholds[j]] if p.thresholds else None)


def format_values(values: np.ndarray) -> str:
    return ", ".join(f"{v:.4g}" for v in np.atleast_1d(values))


def ranked_lists(predictions: Predictions, top: int) -> dict[str, dict[str, list[Entry]]]:
    """For each class: the images predicted as it, most confident first, closest to the boundary first,
    and wrong ones most confident first."""
    p = predictions
    lists: dict[str, dict[str, list[Entry]]] = {name: {} for name in LISTS}
    for c, name in enumerate(p.classes):
        as_class = np.flatnonzero(p.predicted == c)
        wrong = as_class[p.targets[as_class] != c]
        lists["most_confident"][name] = _take(p, as_class, -p.confidence[as_class], top)
        lists["least_confident"][name] = _take(p, as_class, margin(p)[as_class], top)
        lists["confidently_wrong"][name] = _take(p, wrong, -p.confidence[wrong], top)
    return lists


def label_errors(predictions: Predictions, top: int) -> list[Entry]:
    """Images whose given label gets the lowest probability: candidates for relabelling."""
    p = predictions
    own = p.outputs[np.arange(len(p.targets)), p.targets]
    return _take(p, np.arange(len(p.targets)), own, top)


def largest_errors(predictions: Predictions, top: int) -> list[Entry]:
    """Regression: the images whose predicted values are furthest from the true ones."""
    p = predictions
    error = np.abs(p.outputs - p.targets).sum(1)
    return _take(p, np.arange(len(p.targets)), -error, top)


def _take(p: Predictions, indices: np.ndarray, sort_key: np.ndarray, top: int) -> list[Entry]:
    order = np.lexsort((np.array([str(p.files[i]) for i in indices]), sort_key))  # ties broken by file name
    return [entry(p, int(indices[k])) for k in order[:top]]


def analyse(predictions: Predictions, top: int) -> tuple[dict[str, dict[str, dict[str, list[Entry]]]], list[Entry]]:
    """(ranked lists by section, then the label errors or, for regression, the largest errors). Sections: one,
    named "", for single-label tasks; one per label (each a yes/no problem at its threshold) for multilabel;
    none for regression."""
    p = predictions
    if p.task == "regression":
        return {}, largest_errors(p, top)
    if p.task == "multilabel":
        return {name: ranked_lists(label_view(p, j), top) for j, name in enumerate(p.classes)}, []
    return {"": ranked_lists(p, top)}, label_errors(p, top)


def reliability(predictions: Predictions, bins: int = 10) -> dict:
    """Confidence vs accuracy in equal-width bins, and the expected calibration error (ECE)."""
    confidence, correct = predictions.confidence, predictions.predicted == predictions.targets
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            ece += members.mean() * gap
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(members.sum()),
                         "confidence": float(confidence[members].mean()), "accuracy": float(correct[members].mean())})
    return {"bins": rows, "ece": float(ece)}


def coverage(predictions: Predictions, target_accuracy: float = 0.99) -> dict:
    """Accuracy on the images kept, and the share kept, as the abstain threshold rises."""
    confidence, correct = predictions.confidence, predictions.predicted == predictions.targets
    rows = []
    for threshold in np.round(np.arange(0.0, 1.0, 0.01), 2):
        kept = confidence >= threshold
        rows.append({"threshold": float(threshold), "kept": float(kept.mean()),
                     "accuracy": float(correct[kept].mean()) if kept.any() else None})
    reaching = [r for r in rows if r["accuracy"] is not None and r["accuracy"] >= target_accuracy]
    return {"rows": rows, "target_accuracy": target_accuracy,
            "lowest_threshold_reaching_target": reaching[0] if reaching else None}
