"""The audit's numbers: nearest neighbours and duplicate groups (one pass over all pairs), confident learning,
outlier and residual scores, on a feature matrix (the out-of-sample predictions come from `vistrain.model.linear`);
`audit.py` turns them into findings."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

TILE = 2048  # rows of the similarity matrix held at once


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def similarities(x: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One tiled pass over all pairs of rows, by cosine similarity: (indices, similarities) of each row's k nearest
    other rows, and each row's duplicate group: rows at least `threshold` alike are joined, and so on transitively
    (connected components), a group named by its first row; a row alike to none is a group of its own."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    k = max(1, min(k, len(x) - 1))
    unit = _normalised(x)
    index, similarity = np.zeros((len(x), k), int), np.zeros((len(x), k))
    groups = np.arange(len(x))
    for start in range(0, len(x), TILE):
        block = unit[start : start + TILE] @ unit.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # not its own neighbour
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(block, top, 1), axis=1, kind="stable")
        index[start : start + TILE] = np.take_along_axis(top, order, 1)
        similarity[start : start + TILE] = np.take_along_axis(block, index[start : start + TILE], 1)
        rows, columns = np.nonzero(block >= threshold)
        if len(rows):  # this tile's pairs, and each row tied to its group so far: memory is one tile's
            edges = (np.concatenate([rows + start, np.arange(len(x))]), np.concatenate([columns, groups]))
            graph = coo_matrix((np.ones(len(edges[0]), bool), edges), shape=(len(x), len(x)))
            labels = connected_components(graph, directed=False)[1]
            first = np.full(labels.max() + 1, len(x))
            np.minimum.at(first, labels, np.arange(len(x)))
            groups = first[labels]
    return index, similarity, groups


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


def robust_z(values: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 MAD): a z-score that a few extreme values do not inflate."""
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median))
    return (values - median) / max(spread, 1e-12)


def outlier_scores(similarity: np.ndarray) -> np.ndarray:
    """Robust z-scores of the mean cosine distance to the nearest neighbours."""
    return robust_z(1 - similarity.mean(1))


def residual_scores(targets: np.ndarray, outputs: np.ndarray, index: np.ndarray,
                    threshold: float = 3.0) -> dict[int, tuple[float, np.ndarray]]:
    """Regression: {image: (robust z of its residual, the suggested value)} for residuals over `threshold`; the
    prediction blends the out-of-sample value and the neighbours' mean target, half and half."""
    predicted = 0.5 * outputs + 0.5 * targets[index].mean(1)
    z = robust_z(np.abs(targets - predicted).sum(1))
    return {int(i): (float(z[i]), predicted[i]) for i in np.flatnonzero(z > threshold)}
