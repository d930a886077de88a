"""Training the head: one epoch, one evaluation, and the loop that keeps the best epoch."""

from __future__ import annotations

import copy
from dataclasses import astuple, dataclass
from typing import Callable

import torch
from torch import nn

from vistrain import tasks
from vistrain.distributed import Context


@dataclass
class EpochResult:
    """One epoch's losses and scores; the score is the task's (see `tasks.SCORE_NAMES`)."""

    epoch: int
    train_loss: float
    train_score: float
    val_loss: float
    val_score: float

    def as_row(self, score_name: str) -> dict[str, float]:
        """For history.csv: the score columns carry the score's name (train_accuracy, val_mae...)."""
        return {"epoch": self.epoch, "train_loss": self.train_loss, f"train_{score_name}": self.train_score,
                "val_loss": self.val_loss, f"val_{score_name}": self.val_score}


def train_one_epoch(head: nn.Module, loader: torch.utils.data.DataLoader, task: str,
                    optimizer: torch.optim.Optimizer, weights: torch.Tensor | None = None,
                    device: torch.device = torch.device("cpu")) -> tuple[float, float]:
    """One pass over the training batches (features, or images for a whole model), moved to `device` (where the
    model and `weights` are); returns (mean loss, score)."""
    head.train()
    total_loss, total_score, seen = 0.0, 0.0, 0
    for features, targets in loader:
        features, targets = features.to(device), targets.to(device)
        logits = head(features)
        batch_loss = tasks.loss(task, logits, targets, weights)
        optimizer.zero_grad()
        batch_loss.backward()
        optimizer.step()
        total_loss += batch_loss.item() * len(targets)
        total_score += tasks.score(task, tasks.outputs(task, logits.detach()), targets) * len(targets)
        seen += len(targets)
    return total_loss / seen, total_score / seen


@torch.no_grad()
def evaluate(head: nn.Module, features: torch.Tensor, targets: torch.Tensor, task: str,
             weights: torch.Tensor | None = None) -> tuple[float, float, torch.Tensor]:
    """Returns (mean loss, score, outputs) on a whole feature matrix."""
    head.eval()
    logits = head(features)
    predicted = tasks.outputs(task, logits)
    return tasks.loss(task, logits, targets, weights).item(), tasks.score(task, predicted, targets), predicted


def training_loader(dataset: torch.utils.data.Dataset, batch_size: int, generator: torch.Generator,
                    sample_weights: torch.Tensor | None = None, context: Context = Context(),
                    num_workers: int = 0) -> torch.utils.data.DataLoader:
    """Training batches: shuffled by `generator`, or drawn with replacement in proportion to `sample_weights`;
    under torchrun each process's share of every batch (call `loader.sampler.set_epoch` each epoch)."""
    if context.active:
        if sample_weights is not None:
            raise ValueError("--sampler balanced is not available with torchrun; use --class-weight balanced")
        sampler = torch.utils.data.DistributedSampler(dataset, context.world_size, context.rank,
                                                      seed=generator.initial_seed())
        batch_size = max(1, batch_size // context.world_size)  # the same batch across all processes
    elif sample_weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(
            sample_weights.double(), num_samples=len(sample_weights), replacement=True, generator=generator)
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator,
                                       num_workers=num_workers)


def fit(
    head: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    task: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    weights: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
    resume_from: dict | None = None,
    on_checkpoint: Callable[[dict], None] = lambda state: None,
    context: Context = Context(),
) -> tuple[list[EpochResult], int]:
    """Train with Adam; the head ends with the weights of the epoch with the lowest validation loss.

    `weights` weigh the loss (see `tasks.loss`); `sample_weights` draw the batches with replacement in
    proportion to them instead of shuffling. `seed` fixes the batches; seed torch before building the head to
    fix its initial weights and the dropout masks too. After every epoch `on_checkpoint` gets the whole
    training state (tensors, numbers and lists only); passing it back as `resume_from` continues exactly where
    it stopped. Under torchrun (`context.active`) each process takes its share of every batch and
    DistributedDataParallel averages the gradients. Returns the per-epoch history and the best epoch (1-based).
    """
    generator = torch.Generator().manual_seed(seed)
    loader = training_loader(torch.utils.data.TensorDataset(*train), batch_size, generator, sample_weights, context)
    model = torch.nn.parallel.DistributedDataParallel(head) if context.active else head
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    history: list[EpochResult] = []
    best_loss, best_epoch, best_state = float("inf"), 0, None
    if resume_from:
        head.load_state_dict(resume_from["head"])
        optimizer.load_state_dict(resume_from["optimizer"])
        generator.set_state(resume_from["generator"])
        torch.set_rng_state(resume_from["torch_rng"])
        history = [EpochResult(*row) for row in resume_from["history"]]
        best_loss, best_epoch = resume_from["best_loss"], resume_from["best_epoch"]
        best_state = resume_from["best_head"]
    for epoch in range(len(history) + 1, epochs + 1):
        if context.active:
            loader.sampler.set_epoch(epoch)
        train_loss, train_score = train_one_epoch(model, loader, task, optimizer, weights)
        val_loss, val_score, _ = evaluate(head, *val, task, weights)
        result = EpochResult(epoch, train_loss, train_score, val_loss, val_score)
        history.append(result)
        on_epoch(result)
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(head.state_dict())
        on_checkpoint({
            "head": head.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(), "history": [list(astuple(r)) for r in history],
            "best_loss": best_loss, "best_epoch": best_epoch, "best_head": best_state,
        })
    head.load_state_dict(best_state)
    return history, best_epoch
