"""The audit's numbers: out-of-sample predictions, nearest neighbours, confident learning, outlier and duplicate
scores. Plain numpy and scikit-learn on a feature matrix; `audit.py` turns them into findings."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold

from vistrain.data.samples import SINGLE_LABEL

C_GRID = (0.01, 0.1, 1.0)  # logistic regression strengths tried by the inner cross-validation
TILE = 2048  # rows of the similarity matrix held at once


def out_of_sample(x: np.ndarray, targets: np.ndarray, task: str, folds: int, seed: int) -> tuple[int, np.ndarray]:
    """(folds used, outputs): each image's class or label probabilities, or values, from a model trained on the
    other folds (stratified for single-label tasks). Fewer folds when a class has fewer images than `folds`."""
    if task in SINGLE_LABEL:
        smallest = int(np.bincount(targets).min()) if len(targets) else 0
        folds = max(2, min(folds, smallest))
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, targets)
    else:
        folds = max(2, min(folds, len(targets)))
        splitter = KFold(folds, shuffle=True, random_state=seed).split(x)
    n_outputs = int(targets.max()) + 1 if task in SINGLE_LABEL else targets.shape[1]
    outputs = np.zeros((len(x), n_outputs))
    strength = _regularisation(x, targets, task, seed) if task != "regression" else None
    for train, held_out in splitter:
        inputs, held = standardise(x[train], x[held_out])
        if task == "regression":
            outputs[held_out] = RidgeCV(alphas=np.logspace(-1, 6, 15)).fit(inputs, targets[train]).predict(held) \
                .reshape(len(held_out), -1)
        elif task in SINGLE_LABEL:
            model = _logistic(strength).fit(inputs, targets[train])
            outputs[np.ix_(held_out, model.classes_)] = model.predict_proba(held)
        else:
            for j in range(n_outputs):
                outputs[held_out, j] = _binary_probability(inputs, targets[train, j], held, strength)
    return folds, outputs


def standardise(train: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both scaled by the training rows' mean and standard deviation, the latter floored at a tenth of its median:
    a feature (almost) constant in a few training images must not blow up in a held-out one."""
    mean, std = train.mean(0), train.std(0)
    std = np.maximum(std, 0.1 * np.median(std) + 1e-12)
    return (train - mean) / std, (held - mean) / std


def _logistic(strength: float) -> LogisticRegression:
    return LogisticRegression(C=strength, max_iter=1000)


def _binary_probability(inputs: np.ndarray, y: np.ndarray, held: np.ndarray, strength: float) -> np.ndarray:
    """p(label) for the held-out rows; a constant when the training folds hold one value only."""
    if len(np.unique(y)) < 2:
        return np.full(len(held), float(y[0]) if len(y) else 0.5)
    return _logistic(strength).fit(inputs, y).predict_proba(held)[:, 1]


def _regularisation(x: np.ndarray, targets: np.ndarray, task: str, seed: int) -> float:
    """The C of C_GRID with the lowest 3-fold log loss on the whole set (for multi-label, on its first label that
    has both values)."""
    y = targets if task in SINGLE_LABEL else next(
        (targets[:, j].astype(int) for j in range(targets.shape[1]) if len(np.unique(targets[:, j])) == 2), None)
    if y is None or np.bincount(y).min() < 3:
        return 0.1
    losses = {c: 0.0 for c in C_GRID}
    for train, held in StratifiedKFold(3, shuffle=True, random_state=seed).split(x, y):
        inputs, held_inputs = standardise(x[train], x[held])
        for c in C_GRID:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = _logistic(c).fit(inputs, y[train])
            p = model.predict_proba(held_inputs)  # every class is in every training fold
            losses[c] -= np.log(np.clip(p[np.arange(len(held)), y[held]], 1e-12, 1)).sum()
    return min(losses, key=losses.get)


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine similarities) of each row's k nearest other rows, computed a tile at a time."""
    k = max(1, min(k, len(x) - 1))
    unit = _normalised(x)
    index, similarity = np.zeros((len(x), k), int), np.zeros((len(x), k))
    for start in range(0, len(x), TILE):
        block = unit[start : start + TILE] @ unit.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # not its own neighbour
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(block, top, 1), axis=1, kind="stable")
        index[start : start + TILE] = np.take_along_axis(top, order, 1)
        similarity[start : start + TILE] = np.take_along_axis(block, index[start : start + TILE], 1)
    return index, similarity


def confident_learning(p: np.ndarray, y: np.ndarray) -> Iterator[tuple[int, int, float]]:
    """(image, suggested class, its self-confidence) of the images confident learning flags: per class a threshold
    (the mean probability of that class over the images labelled with it); the confident joint C[i, j] counts images
    labelled i whose most probable class above its threshold is j; then, for each i != j, the C[i, j] images
    labelled i with the largest p_j - p_i ("prune by noise rate", Northcutt et al. 2021), C calibrated to the
    class counts."""
    n_classes = p.shape[1]
    thresholds = np.array([p[y == c, c].mean() if (y == c).any() else 1.0 for c in range(n_classes)])
    above = p >= thresholds
    confident = np.where(above, p, -1).argmax(1)
    joint = np.zeros((n_classes, n_classes))
    for i in np.flatnonzero(above.any(1)):
        joint[y[i], confident[i]] += 1
    counts = np.bincount(y, minlength=n_classes)
    joint = joint / np.maximum(joint.sum(1, keepdims=True), 1) * counts[:, None]
    flagged: dict[int, int] = {}
    for given in range(n_classes):
        members = np.flatnonzero(y == given)
        for other in range(n_classes):
            if other != given and round(joint[given, other]):
                margin = p[members, other] - p[members, given]
                for i in members[np.argsort(-margin, kind="stable")[: round(joint[given, other])]]:
                    flagged.setdefault(int(i), other)
    for i, other in flagged.items():
        yield i, other, float(p[i, y[i]])


def outlier_scores(similarity: np.ndarray) -> np.ndarray:
    """Robust z-scores of the mean cosine distance to the nearest neighbours: (d - median) / (1.4826 MAD)."""
    distance = 1 - similarity.mean(1)
    median = np.median(distance)
    spread = 1.4826 * np.median(np.abs(distance - median))
    return (distance - median) / max(spread, 1e-12)


def residual_scores(targets: np.ndarray, outputs: np.ndarray, index: np.ndarray,
                    threshold: float = 3.0) -> dict[int, tuple[float, np.ndarray]]:
    """Regression: {image: (robust z of its residual, the suggested value)} for residuals over `threshold`; the
    prediction blends the out-of-sample value and the neighbours' mean target, half and half."""
    predicted = 0.5 * outputs + 0.5 * targets[index].mean(1)
    residual = np.abs(targets - predicted).sum(1)
    median = np.median(residual)
    spread = 1.4826 * np.median(np.abs(residual - median))
    z = (residual - median) / max(spread, 1e-12)
    return {int(i): (float(z[i]), predicted[i]) for i in np.flatnonzero(z > threshold)}


def duplicate_pairs(x: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for i < j whose features have a cosine similarity of at least `threshold` (tiled)."""
    unit = _normalised(x)
    pairs = []
    for start in range(0, len(x), TILE):
        block = unit[start : start + TILE] @ unit.T
        for a, b in zip(*np.nonzero(block >= threshold)):
            if start + a < b:
                pairs.append((int(start + a), int(b), float(block[a, b])))
    return pairs
