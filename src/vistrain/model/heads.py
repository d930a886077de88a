"""The new head trained on top of the frozen backbone's pooled features."""

from __future__ import annotations

import torch
from torch import nn

from vistrain.model import HEADS


class Rescale(nn.Module):
    """output * std + mean, per target: a regression head learns standardised values and predicts real ones.

    mean and std are buffers, so they are saved and loaded with the head's weights.
    """

    def __init__(self, n_outputs: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_outputs))
        self.register_buffer("std", torch.ones(n_outputs))

    def fit(self, targets: torch.Tensor) -> None:
        """Take mean and standard deviation from the training targets (std 1 where a target is constant)."""
        self.mean.copy_(targets.mean(0))
        std = targets.std(0) if len(targets) > 1 else torch.ones_like(self.std)
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class Standardize(nn.Module):
    """(features - mean) / std, per feature: the `logistic` head's first step, fitted with it (buffers, saved with
    the head's weights, so predict and export standardise as training did)."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_head(kind: str, in_features: int, out_features: int, hidden: int = 256, dropout: float = 0.2,
               rescale: bool = False) -> nn.Sequential:
    """`mlp`: dense -> ReLU -> dropout -> output, as in the course; `linear`: dropout -> output; `logistic`:
    standardise -> output, fitted in closed form (`vistrain.training.linear_head`); `rescale` (regression) appends
    `Rescale`.

    Global pooling is the backbone's last step, so it is already applied to the features.
    """
    if kind == "mlp":
        layers = [nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_features)]
    elif kind == "linear":
        layers = [nn.Dropout(dropout), nn.Linear(in_features, out_features)]
    elif kind == "logistic":
        layers = [Standardize(in_features), nn.Linear(in_features, out_features)]
    else:
        raise ValueError(f"unknown head {kind!r}; choose one of {', '.join(HEADS)}")
    return nn.Sequential(*layers, *([Rescale(out_features)] if rescale else []))
