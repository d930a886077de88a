"""What the model is sure of, unsure of, and wrong about: the course's three questions, plus calibration.

Everything here works on saved predictions (file, true class, class probabilities); nothing runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

LISTS = ("most_confident", "least_confident", "confidently_wrong")
LIST_TITLES = {
    "most_confident": "most confident",
    "least_confident": "least confident",
    "confidently_wrong": "confidently wrong",
    "label_errors": "possible label errors",
}


@dataclass(frozen=True)
class Entry:
    """One image in a ranked list."""

    file: Path
    true: str
    predicted: str
    probability: float  # of the predicted class
    label_probability: float  # of the given (true) class


@dataclass
class Predictions:
    """Predictions for labelled images: what `inspect` and the report are computed from."""

    files: list[Path]
    labels: np.ndarray  # (n,) true class ids
    probabilities: np.ndarray  # (n, n_classes)
    classes: list[str]

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(1)

    @property
    def margin(self) -> np.ndarray:
        """Top probability minus the runner-up: 0 on the decision boundary."""
        ordered = np.sort(self.probabilities, axis=1)
        return ordered[:, -1] - ordered[:, -2]

    def entry(self, i: int) -> Entry:
        return Entry(self.files[i], self.classes[self.labels[i]], self.classes[self.predicted[i]],
                     float(self.confidence[i]), float(self.probabilities[i, self.labels[i]]))


def ranked_lists(predictions: Predictions, top: int) -> dict[str, dict[str, list[Entry]]]:
    """For each class: the images predicted as it, most confident first, closest to the boundary first,
    and wrong ones most confident first."""
    p = predictions
    lists: dict[str, dict[str, list[Entry]]] = {name: {} for name in LISTS}
    for c, name in enumerate(p.classes):
        as_class = np.flatnonzero(p.predicted == c)
        wrong = as_class[p.labels[as_class] != c]
        lists["most_confident"][name] = _take(p, as_class, -p.confidence[as_class], top)
        lists["least_confident"][name] = _take(p, as_class, p.margin[as_class], top)
        lists["confidently_wrong"][name] = _take(p, wrong, -p.confidence[wrong], top)
    return lists


def label_errors(predictions: Predictions, top: int) -> list[Entry]:
    """Images whose given label gets the lowest probability: candidates for relabelling."""
    p = predictions
    own = p.probabilities[np.arange(len(p.labels)), p.labels]
    return _take(p, np.arange(len(p.labels)), own, top)


def _take(p: Predictions, indices: np.ndarray, sort_key: np.ndarray, top: int) -> list[Entry]:
    order = np.lexsort((np.array([str(p.files[i]) for i in indices]), sort_key))  # ties broken by file name
    return [p.entry(int(indices[k])) for k in order[:top]]


def reliability(predictions: Predictions, bins: int = 10) -> dict:
    """Confidence vs accuracy in equal-width bins, and the expected calibration error (ECE)."""
    confidence, correct = predictions.confidence, predictions.predicted == predictions.labels
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
    confidence, correct = predictions.confidence, predictions.predicted == predictions.labels
    rows = []
    for threshold in np.round(np.arange(0.0, 1.0, 0.01), 2):
        kept = confidence >= threshold
        rows.append({"threshold": float(threshold), "kept": float(kept.mean()),
                     "accuracy": float(correct[kept].mean()) if kept.any() else None})
    reaching = [r for r in rows if r["accuracy"] is not None and r["accuracy"] >= target_accuracy]
    return {"rows": rows, "target_accuracy": target_accuracy,
            "lowest_threshold_reaching_target": reaching[0] if reaching else None}
