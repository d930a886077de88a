"""Each task's metrics (computed by scikit-learn) as plain JSON-ready dicts, and multi-label thresholds."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
    roc_auc_score,
    top_k_accuracy_score,
)

HEADLINE = {"binary": "accuracy", "multiclass": "accuracy", "multilabel": "micro_f1", "regression": "mae"}
THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


def task_metrics(task: str, targets: np.ndarray, outputs: np.ndarray, names: list[str],
                 thresholds: list[float] | None = None) -> dict:
    """The metrics of the course's table for `task`; `outputs` as from `tasks.outputs`."""
    if task == "regression":
        return regression_metrics(targets, outputs, names)
    if task == "multilabel":
        return multilabel_metrics(targets, outputs, names, thresholds or [0.5] * len(names))
    metrics = classification_metrics(targets, outputs.argmax(1), names)
    if len(np.unique(targets)) == len(names):  # AUC and top-k need every class present
        if task == "binary":
            metrics["roc_auc"] = float(roc_auc_score(targets, outputs[:, 1]))
        elif len(names) > 2:
            k = 2 if len(names) <= 5 else 5
            metrics[f"top_{k}_accuracy"] = float(top_k_accuracy_score(targets, outputs, k=k,
                                                                      labels=range(len(names))))
    return metrics


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and the confusion matrix (rows = true)."""
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f1)),
        "n_images": int(len(y_true)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def multilabel_metrics(targets: np.ndarray, probabilities: np.ndarray, labels: list[str],
                       thresholds: list[float]) -> dict:
    """Per-label precision/recall/F1/average precision at each label's threshold, micro and macro F1, mean
    average precision (over labels with positives), exact-match and per-label accuracy."""
    predicted = probabilities >= np.asarray(thresholds)
    precision, recall, f1, support = precision_recall_fscore_support(targets, predicted, zero_division=0)
    has_positives = targets.sum(0) > 0
    ap = [float(average_precision_score(targets[:, j], probabilities[:, j])) if has_positives[j] else None
          for j in range(len(labels))]
    return {
        "micro_f1": float(f1_score(targets, predicted, average="micro", zero_division=0)),
        "macro_f1": float(np.mean(f1)),
        "mean_average_precision": float(np.mean([a for a in ap if a is not None])) if any(has_positives) else None,
        "exact_match": float(accuracy_score(targets, predicted)),
        "label_accuracy": float((predicted == targets.astype(bool)).mean()),
        "n_images": int(len(targets)),
        "per_label": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
                   "average_precision": a, "threshold": float(t)}
            for name, p, r, f, s, a, t in zip(labels, precision, recall, f1, support, ap, thresholds)
        },
    }


def regression_metrics(targets: np.ndarray, values: np.ndarray, names: list[str]) -> dict:
    """MAE, RMSE and R² per target and averaged over targets."""
    per_target = {
        name: {"mae": float(mean_absolute_error(targets[:, j], values[:, j])),
               "rmse": float(np.sqrt(mean_squared_error(targets[:, j], values[:, j]))),
               "r2": float(r2_score(targets[:, j], values[:, j])) if len(targets) > 1 else None}
        for j, name in enumerate(names)
    }
    mean = {key: float(np.mean([m[key] for m in per_target.values()])) for key in ("mae", "rmse")}
    r2 = [m["r2"] for m in per_target.values() if m["r2"] is not None]
    return {**mean, "r2": float(np.mean(r2)) if r2 else None, "n_images": int(len(targets)), "per_target": per_target}


def tune_thresholds(targets: np.ndarray, probabilities: np.ndarray) -> list[float]:
    """Per label, the threshold on THRESHOLD_GRID with the best F1 on these (validation) images; ties go to the
    threshold nearest 0.5, and a label without positives keeps 0.5."""
    thresholds = []
    for j in range(targets.shape[1]):
        if targets[:, j].sum() == 0:
            thresholds.append(0.5)
            continue
        scores = [f1_score(targets[:, j], probabilities[:, j] >= t, zero_division=0) for t in THRESHOLD_GRID]
        best = max(scores)
        candidates = [t for t, s in zip(THRESHOLD_GRID, scores) if s == best]
        thresholds.append(float(min(candidates, key=lambda t: abs(t - 0.5))))
    return thresholds
