"""The epoch loop, for every phase of training: one epoch, one evaluation, and `fit`, which keeps the best weights
so far.

`BestSoFar` (like timm's CheckpointSaver) knows the lowest validation loss across phases: the head on frozen
features first, then fine-tuning the backbone's last blocks. A fine-tuning that never beats the frozen head
leaves the frozen head as the best, and the run keeps it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import astuple, dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from vistrain.core.device import HalvingBatches, autocast, grad_scaler
from vistrain.core.errors import OptionError
from vistrain.model import tasks
from vistrain.training.distributed import Context


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


@dataclass
class BestSoFar:
    """The epoch with the lowest validation loss over every phase: its phase, epoch (within the phase), weights
    (a state dict of the model trained in that phase) and validation outputs."""

    loss: float = math.inf
    phase: str = ""
    epoch: int = 0
    weights: dict | None = None
    outputs: torch.Tensor | None = None

    def update(self, loss: float, phase: str, epoch: int, model: nn.Module, outputs: torch.Tensor) -> bool:
        """Keep this epoch if its loss is the lowest so far; returns whether it was."""
        if loss >= self.loss:
            return False
        self.loss, self.phase, self.epoch = loss, phase, epoch
        self.weights, self.outputs = copy.deepcopy(model.state_dict()), outputs
        return True

    def state_dict(self) -> dict:
        return {"loss": self.loss, "phase": self.phase, "epoch": self.epoch, "weights": self.weights,
                "outputs": self.outputs}

    def load_state_dict(self, state: dict) -> None:
        self.loss, self.phase, self.epoch = state["loss"], state["phase"], state["epoch"]
        self.weights, self.outputs = state["weights"], state["outputs"]


def train_one_epoch(model: nn.Module, loader: torch.utils.data.DataLoader, task: str,
                    optimizer: torch.optim.Optimizer, weights: torch.Tensor | None = None,
                    device: torch.device = torch.device("cpu"), batches: HalvingBatches | None = None,
                    scheduler: LRScheduler | None = None, label_smoothing: float = 0.0) -> tuple[float, float]:
    """One pass over the training batches (features for a head, or images for a whole model), moved to `device`
    (where the model and `weights` are), in mixed precision on CUDA; a batch that runs out of memory is trained in
    pieces (`batches`, see `train_step`); `scheduler` steps after every batch. Returns (mean loss, score)."""
    model.train()
    batches = batches or HalvingBatches()
    scaler = grad_scaler(device)
    total_loss, total_score, seen = 0.0, 0.0, 0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        batch_loss, logits = batches.run(len(targets), lambda pieces: train_step(
            model, inputs, targets, pieces, task, optimizer, scaler, weights, device, label_smoothing))
        if scheduler is not None:
            scheduler.step()
        total_loss += batch_loss * len(targets)
        total_score += tasks.score(task, tasks.outputs(task, logits), targets) * len(targets)
        seen += len(targets)
    return total_loss / seen, total_score / seen


def train_step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, pieces: list[slice], task: str,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, weights: torch.Tensor | None,
               device: torch.device, label_smoothing: float = 0.0) -> tuple[float, torch.Tensor]:
    """One optimiser step on a batch, its gradients summed over `pieces` of it (each piece's loss weighted by its
    share of the batch; under DistributedDataParallel only the last piece's backward pass synchronises, so every
    process synchronises once per batch however its pieces were cut). Returns (the batch's loss, its logits)."""
    optimizer.zero_grad()
    loss, logits = 0.0, []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            with autocast(device):
                piece_logits = model(inputs[piece]).float()
                piece_loss = tasks.loss(task, piece_logits, targets[piece], weights, label_smoothing) * (
                    len(piece_logits) / len(targets))
            scaler.scale(piece_loss).backward()
        loss += piece_loss.item()
        logits.append(piece_logits.detach())
    scaler.step(optimizer)
    scaler.update()
    return loss, torch.cat(logits)


def training_loader(dataset: torch.utils.data.Dataset, batch_size: int, generator: torch.Generator,
                    sample_weights: torch.Tensor | None = None, context: Context = Context(),
                    num_workers: int = 0) -> torch.utils.data.DataLoader:
    """Training batches: shuffled by `generator`, or drawn with replacement in proportion to `sample_weights`;
    under torchrun each process's share of every batch (`fit` calls `loader.sampler.set_epoch` each epoch)."""
    if context.active:
        if sample_weights is not None:
            raise OptionError("{sampler} balanced is not available with torchrun; use {class_weight} balanced")
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


@dataclass
class Phase:
    """One phase of training: what trains (`model`, run as `trainer`: itself or its DistributedDataParallel
    wrapper), on what, and for how long."""

    name: str  # "frozen" (the head on cached features) or "fine-tune"
    model: nn.Module
    trainer: nn.Module
    loader: torch.utils.data.DataLoader
    validate: Callable[[], tuple[float, float, torch.Tensor]]  # (loss, score, outputs) of `model` now
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    epochs: int
    patience: int | None = None  # stop after this many epochs without a new best; None: run every epoch
    batches: HalvingBatches = field(default_factory=HalvingBatches)  # pieces that fit the device's memory
    scheduler: LRScheduler | None = None  # stepped after every batch
    label_smoothing: float = 0.0
    deadline: Callable[[], float] | None = None  # seconds left: `fit` plans no epoch that would not end in time
    most_epochs: int | None = None  # with a deadline, the first epoch's time may raise `epochs` up to this
    train_seconds: float = 0.0  # spent in training passes by `fit`, this session
    images_trained: int = 0

    @property
    def images_per_second(self) -> float | None:
        return self.images_trained / self.train_seconds if self.images_trained else None


def fit(phase: Phase, task: str, best: BestSoFar, weights: torch.Tensor | None = None,
        device: torch.device = torch.device("cpu"), context: Context = Context(),
        on_epoch: Callable[[EpochResult], None] = lambda result: None, resume_from: dict | None = None,
        on_checkpoint: Callable[[dict], None] = lambda state: None) -> list[EpochResult]:
    """Train `phase` epoch by epoch, updating `best`, and return the phase's history. After each epoch
    `on_checkpoint` gets the whole state (tensors, numbers and lists only); passing it back as `resume_from`
    continues exactly where it stopped. Under torchrun (`context.active`) each process takes its share of every
    batch and DistributedDataParallel averages the gradients. With a `phase.deadline`, each epoch's time sets how
    many more fit: `phase.epochs` shrinks to those (a schedule reading it decays sooner), or, after the first
    epoch, grows to them up to `phase.most_epochs` (the plan was made from a measure of two steps)."""
    history: list[EpochResult] = []
    stale = 0
    if resume_from:
        phase.model.load_state_dict(resume_from["model"])
        phase.optimizer.load_state_dict(resume_from["optimizer"])
        phase.generator.set_state(resume_from["generator"])
        torch.set_rng_state(resume_from["torch_rng"])
        phase.epochs = resume_from.get("epochs", phase.epochs)
        if phase.scheduler is not None:
            phase.scheduler.load_state_dict(resume_from["scheduler"])
        history = [EpochResult(*row) for row in resume_from["history"]]
        stale = resume_from["stale"]
        best.load_state_dict(resume_from["best"])
    epoch = len(history)
    while epoch < phase.epochs:
        if phase.patience is not None and stale >= phase.patience:
            break
        epoch += 1
        if context.active:
            phase.loader.sampler.set_epoch(epoch)
        started = time.perf_counter()
        train_loss, train_score = train_one_epoch(phase.trainer, phase.loader, task, phase.optimizer, weights, device,
                                                  phase.batches, phase.scheduler, phase.label_smoothing)
        phase.train_seconds += time.perf_counter() - started
        phase.images_trained += len(phase.loader.sampler)
        val_loss, val_score, outputs = phase.validate()
        if phase.deadline is not None:
            fit_in = epoch + int(phase.deadline() // (time.perf_counter() - started))
            phase.epochs = min((phase.most_epochs or phase.epochs) if epoch == 1 else phase.epochs, fit_in)
        history.append(EpochResult(epoch, train_loss, train_score, val_loss, val_score))
        on_epoch(history[-1])
        stale = 0 if best.update(val_loss, phase.name, epoch, phase.model, outputs) else stale + 1
        on_checkpoint({
            "model": phase.model.state_dict(), "optimizer": phase.optimizer.state_dict(),
            "generator": phase.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": [list(astuple(r)) for r in history], "stale": stale, "best": best.state_dict(),
            "epochs": phase.epochs,
            **({"scheduler": phase.scheduler.state_dict()} if phase.scheduler is not None else {}),
        })
    return history
