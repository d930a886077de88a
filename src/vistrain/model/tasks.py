"""Loss and last-layer activation chosen by task, as in the course's table.

| task       | output units     | activation          | loss                 | score per epoch     |
|------------|------------------|---------------------|----------------------|---------------------|
| binary     | 1                | sigmoid             | binary cross-entropy | accuracy            |
| multiclass | one per class    | softmax             | cross-entropy        | accuracy            |
| multilabel | one per label    | sigmoid per label   | binary cross-entropy | label accuracy      |
| regression | one per target   | none (linear)       | mean squared error   | mean absolute error |

`outputs` gives what the model predicts: class probabilities (rows summing to 1), label probabilities
(independent) or values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from vistrain.core.errors import OptionError
from vistrain.data.samples import SINGLE_LABEL
SCORE_NAMES = {"binary": "accuracy", "multiclass": "accuracy", "multilabel": "label_accuracy", "regression": "mae"}
HIGHER_IS_BETTER = {"accuracy": True, "label_accuracy": True, "mae": False}


def output_units(task: str, n_outputs: int) -> int:
    return 1 if task == "binary" else n_outputs


def target_tensor(task: str, targets: Sequence) -> torch.Tensor:
    """Class ids (long) for single-label tasks, a float matrix for multi-label and regression."""
    if task in SINGLE_LABEL:
        return torch.tensor(list(targets), dtype=torch.long)
    return torch.tensor([list(t) for t in targets], dtype=torch.float32)


def loss(task: str, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
         label_smoothing: float = 0.0) -> torch.Tensor:
    """The task's loss. `weights`: one per class (single-label), or each label's positive weight (multilabel);
    `label_smoothing` (single-label): the share of each target spread evenly over the classes."""
    if task == "binary":
        sample_weights = None if weights is None else weights[targets]
        soft = targets.float() * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), soft, weight=sample_weights)
    if task == "multiclass":
        return F.cross_entropy(logits, targets, weight=weights, label_smoothing=label_smoothing)
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights)
    return F.mse_loss(logits, targets)


def outputs(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (binary: [p(first), p(second)]), label probabilities, or values."""
    if task == "binary":
        positive = torch.sigmoid(logits.squeeze(1))
        return torch.stack([1 - positive, positive], dim=1)
    if task == "multiclass":
        return torch.softmax(logits, dim=1)
    if task == "multilabel":
        return torch.sigmoid(logits)
    return logits


def score(task: str, predicted: torch.Tensor, targets: torch.Tensor) -> float:
    """The per-epoch score named in SCORE_NAMES, from `outputs` and targets."""
    if task in SINGLE_LABEL:
        return (predicted.argmax(1) == targets).float().mean().item()
    if task == "multilabel":
        return ((predicted >= 0.5).float() == targets).float().mean().item()
    return (predicted - targets).abs().mean().item()


@torch.no_grad()
def score_logits(task: str, logits: torch.Tensor, targets: torch.Tensor,
                 weights: torch.Tensor | None = None) -> tuple[float, float, torch.Tensor]:
    """(mean loss, score, outputs) of a model's logits for known targets (a validation set's, after each epoch)."""
    predicted = outputs(task, logits)
    return loss(task, logits, targets, weights).item(), score(task, predicted, targets), predicted


def balanced_weights(task: str, targets: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """`--class-weight balanced`: n / (k * count) per class, or negatives / positives per label."""
    if task in SINGLE_LABEL:
        counts = torch.bincount(targets, minlength=n_outputs).float()
        return len(targets) / (n_outputs * counts.clamp(min=1))
    if task == "multilabel":
        positives = targets.sum(0)
        return (len(targets) - positives) / positives.clamp(min=1)
    raise OptionError("{class_weight} balanced needs a classification task, not regression")


def balanced_sample_weights(task: str, targets: torch.Tensor) -> torch.Tensor:
    """`--sampler balanced`: each image drawn with probability 1 / (its class's count), so classes come up
    equally often; multi-label images by their rarest label."""
    if task in SINGLE_LABEL:
        return 1.0 / torch.bincount(targets).float()[targets]
    if task == "multilabel":
        rarity = 1.0 / targets.sum(0).clamp(min=1)
        return (targets * rarity).max(1).values.clamp(min=rarity.min())
    raise OptionError("{sampler} balanced needs a classification task, not regression")
