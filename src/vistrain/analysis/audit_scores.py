"""The audit's numbers: nearest neighbours, confident learning, outlier and duplicate scores, on a feature matrix
(the out-of-sample predictions come from `vistrain.model.linear`); `audit.py` turns them into findings."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

TILE = 2048  # rows of the similarity matrix held at once


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
