"""Choosing a model without fitting the validation split: a seeded inner split of the training images, the
metric every candidate is chosen by, and what is tuned on the held-out part — a fine-tuning's best epoch, decision
offsets — cross-fitted across its halves.

The validation split is never looked at while choosing: candidates train on the inner split's larger part
(`fit`) and are scored on its other part (`held`); the validation metrics are reported for each candidate
beside, for the reader, once the choice is made.
"""

from __future__ import annotations

import numpy as np
import torch

from vistrain.model import tasks
from vistrain.model.linear import decision_offsets
from vistrain.model.metrics import task_metrics

HELD_FRACTION = 0.15
# The metric a candidate is chosen by, per task; multi-class by macro F1, so that rare classes count (as the
# logistic head's decision offsets do).
SELECTION_METRIC = {"binary": "accuracy", "multiclass": "macro_f1", "multilabel": "micro_f1", "regression": "mae"}


def inner_split(task: str, targets: torch.Tensor, seed: int,
                fraction: float = HELD_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held) row indices of the training images: `fraction` held out, per class for single-label tasks (a
    class of two or more images always keeps one on each side), seeded."""
    rng = np.random.default_rng(seed + 23)
    n = len(targets)
    groups = [np.flatnonzero(targets.numpy() == c) for c in np.unique(targets.numpy())] \
        if task in tasks.SINGLE_LABEL else [np.arange(n)]
    held = []
    for rows in groups:
        rows = rng.permutation(rows)
        take = min(len(rows) - 1, max(1, int(round(fraction * len(rows))))) if len(rows) > 1 else 0
        held += list(rows[:take])
    held_set = set(held)
    return np.array([i for i in range(n) if i not in held_set], dtype=int), np.array(sorted(held), dtype=int)


def selection_score(task: str, targets: np.ndarray, outputs: np.ndarray, classes: list[str]) -> float:
    """The task's selection metric (`SELECTION_METRIC`) of these outputs."""
    return float(task_metrics(task, targets, outputs, classes)[SELECTION_METRIC[task]])


def better(task: str, score: float, loss: float, other: tuple[float, float] | None) -> bool:
    """Whether (score, loss) beats `other`'s: a better metric, or the same metric with a lower loss."""
    if other is None:
        return True
    sign = -1 if task == "regression" else 1
    return (sign * score, -loss) > (sign * other[0], -other[1])


def cross_fitted_offsets(probabilities: np.ndarray, targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multi-class decision offsets for macro F1 (`linear.decision_offsets`) tuned on held-out predictions:
    (the offsets tuned on all of them, the predictions each adjusted by offsets tuned on the other half), so that
    the adjusted predictions still score what they would on unseen images."""
    halves = np.array_split(np.random.default_rng(seed).permutation(len(targets)), 2)
    adjusted = probabilities.copy()
    for mine, other in (halves, halves[::-1]):
        adjusted[mine] = with_offsets(probabilities[mine], decision_offsets(probabilities[other], targets[other]))
    return decision_offsets(probabilities, targets), adjusted


def cross_fitted_epochs(logits_by_epoch: list[torch.Tensor], targets: torch.Tensor, task: str,
                        seed: int) -> torch.Tensor:
    """Held-out logits as unseen images would get them from a training that keeps the epoch with the lowest
    held-out loss: each half of the held rows takes its logits from the epoch the other half's loss chooses (the
    best epoch's own logits would be the best of several tries on the very images they are scored on)."""
    halves = np.array_split(np.random.default_rng(seed).permutation(len(targets)), 2)
    chosen = logits_by_epoch[-1].clone()
    for mine, other in (halves, halves[::-1]):
        if len(mine) and len(other):
            losses = [tasks.score_logits(task, logits[other], targets[other])[0] for logits in logits_by_epoch]
            chosen[mine] = logits_by_epoch[int(np.argmin(losses))][mine]
    return chosen


def with_offsets(probabilities: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Class probabilities with `offsets` added to their logarithms, normalised again."""
    logs = np.log(np.clip(probabilities, 1e-12, 1)) + offsets
    shifted = np.exp(logs - logs.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)
