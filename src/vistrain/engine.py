"""Training the head: one epoch, one evaluation, and the loop that keeps the best epoch."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from vistrain import tasks


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


def train_one_epoch(head: nn.Module, loader: torch.utils.data.DataLoader, task: str,
                    optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    """One pass over the training features; returns (mean loss, accuracy)."""
    head.train()
    total_loss, correct, seen = 0.0, 0, 0
    for features, labels in loader:
        logits = head(features)
        batch_loss = tasks.loss(task, logits, labels)
        optimizer.zero_grad()
        batch_loss.backward()
        optimizer.step()
        total_loss += batch_loss.item() * len(labels)
        correct += (tasks.probabilities(task, logits).argmax(1) == labels).sum().item()
        seen += len(labels)
    return total_loss / seen, correct / seen


@torch.no_grad()
def evaluate(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, task: str) -> tuple[float, float, torch.Tensor]:
    """Returns (mean loss, accuracy, class probabilities) on a whole feature matrix."""
    head.eval()
    logits = head(features)
    probs = tasks.probabilities(task, logits)
    return tasks.loss(task, logits, labels).item(), (probs.argmax(1) == labels).float().mean().item(), probs


def fit(
    head: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    task: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
) -> tuple[list[EpochResult], int]:
    """Train with Adam; the head ends with the weights of the epoch with the lowest validation loss.

    `seed` fixes the order of the batches; seed torch before building the head to fix its initial weights
    and the dropout masks too. Returns the per-epoch history and the best epoch (1-based).
    """
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*train), batch_size=batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    history: list[EpochResult] = []
    best_loss, best_epoch, best_state = float("inf"), 0, None
    for epoch in range(1, epochs + 1):
        train_loss, train_accuracy = train_one_epoch(head, loader, task, optimizer)
        val_loss, val_accuracy, _ = evaluate(head, *val, task)
        result = EpochResult(epoch, train_loss, train_accuracy, val_loss, val_accuracy)
        history.append(result)
        on_epoch(result)
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    return history, best_epoch
