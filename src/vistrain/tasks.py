"""Loss and last-layer activation chosen by task, as in the course's table.

| task       | output units   | activation | loss                 |
|------------|----------------|------------|----------------------|
| binary     | 1              | sigmoid    | binary cross-entropy |
| multiclass | one per class  | softmax    | cross-entropy        |
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

TASKS = ("binary", "multiclass")


def choose_task(requested: str, n_classes: int) -> str:
    """`auto` picks binary for two classes and multiclass for more; an explicit choice is checked."""
    if requested == "auto":
        return "binary" if n_classes == 2 else "multiclass"
    if requested not in TASKS:
        raise ValueError(f"unknown task {requested!r}; choose auto or one of {', '.join(TASKS)}")
    if requested == "binary" and n_classes != 2:
        raise ValueError(f"--task binary needs exactly 2 classes, the data has {n_classes}")
    return requested


def output_units(task: str, n_classes: int) -> int:
    return 1 if task == "binary" else n_classes


def loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on one logit (label 1 = the second class), or cross-entropy over all classes."""
    if task == "binary":
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float())
    return F.cross_entropy(logits, labels)


def probabilities(task: str, logits: torch.Tensor) -> torch.Tensor:
    """One probability per class, rows summing to 1."""
    if task == "binary":
        positive = torch.sigmoid(logits.squeeze(1))
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)
