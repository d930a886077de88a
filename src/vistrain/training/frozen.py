"""Training the head on frozen features, the first of the training job's phases (`train.py`), and what every
phase shares: the run being trained (`Run`) and what training produced (`Trained`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

import torch

from vistrain.backbones import Backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.core.device import ignore
from vistrain.core.errors import OptionError
from vistrain.core.messages import say
from vistrain.data.samples import Dataset
from vistrain.model import tasks
from vistrain.model.heads import build_head
from vistrain.training.checkpoint import Checkpoint
from vistrain.training.distributed import Context
from vistrain.training.engine import BestSoFar, EpochResult, Phase, fit, training_loader
from vistrain.training.features_step import FeatureSet
from vistrain.training.linear_head import fit_logistic_head
from vistrain.training.options import TrainOptions

FROZEN = "frozen"


@dataclass
class Run:
    """A run being trained: where it goes, its checkpoint, the torchrun context, where its torch work runs and who
    is told of each epoch."""

    path: Path
    checkpoint: Checkpoint
    context: Context
    device: torch.device = torch.device("cpu")
    lock: TextIO | None = None  # the run directory's lock, held by the process that writes it
    started: float = field(default_factory=time.perf_counter)
    on_epoch: Callable[[EpochResult], None] = ignore  # told each epoch's result, as it ends


@dataclass
class Trained:
    """What the training phases produced: the head (and the backbone, when fine-tuning beat the frozen head)."""

    head: torch.nn.Module
    history: list[EpochResult]
    phases: list[str]  # each epoch's phase
    best: BestSoFar
    backbone: torch.nn.Module | None = None  # fine-tuned, and better than the frozen head
    fine_tune: dict = field(default_factory=dict)  # what config.json records of fine-tuning
    head_fit: dict = field(default_factory=dict)  # what config.json records of a closed-form head's fit
    head_kind: str = ""  # when it is not options.head (a budget's choice)
    preprocess: Preprocess | None = None  # when it is not the backbone's (a budget's choice, at the data's size)
    feature_backbone: Backbone | None = None  # when it is not options.backbone (a budget's choice: a larger one)
    leaderboard: list[dict] = field(default_factory=list)  # with --budget: each candidate tried
    budget: dict = field(default_factory=dict)  # what config.json records of the budget


def loss_weights(task: str, targets: torch.Tensor, n_outputs: int,
                  options: TrainOptions) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(per-class loss weights for --class-weight, per-image draw weights for --sampler), or None each."""
    weights = tasks.balanced_weights(task, targets, n_outputs) if options.class_weight == "balanced" else None
    samples = tasks.balanced_sample_weights(task, targets) if options.sampler == "balanced" else None
    return weights, samples


def epoch_printer(run: Run, label: str, epochs: int, task: str,
                  say: Callable[[str], None] = say) -> Callable[[EpochResult], None]:
    """What each epoch of a stage does when it ends: a line said, and the run's `on_epoch` told."""
    name = tasks.SCORE_NAMES[task]

    def report(r: EpochResult) -> None:
        say(f"{label} {r.epoch:>3}/{epochs}  loss {r.train_loss:.4f}  {name} {r.train_score:.4f}  "
            f"val_loss {r.val_loss:.4f}  val_{name} {r.val_score:.4f}")
        run.on_epoch(r)

    return report


def train_head(features: FeatureSet, dataset: Dataset, backbone: Backbone, options: TrainOptions, run: Run,
               name: str = FROZEN, say: Callable[[str], None] = say) -> Trained:
    """The head on the cached features, keeping the epoch with the lowest validation loss; `name` is its phase's
    (in the checkpoint and history); `say` is told each epoch's line, or how a closed-form head was fitted."""
    task, (train_x, train_y), (val_x, val_y) = dataset.task, features.train, features.val
    torch.manual_seed(options.seed)  # initial weights and dropout masks
    head = build_head(options.head, backbone.feature_dim, tasks.output_units(task, len(dataset.classes)),
                      options.hidden, options.dropout, rescale=task == "regression")
    if task == "regression":
        head[-1].fit(train_y)
    if options.head == "logistic":
        if options.class_weight or options.sampler:
            raise OptionError("{class_weight} and {sampler} apply to the mlp and linear heads; the logistic head "
                             "tunes its multi-class decision rule for macro F1 instead")
        best = BestSoFar()
        history, details = fit_logistic_head(head, features.train, features.val, task, options.seed, best, name)
        say(f"logistic head: C = {details['strength']:g} (cross-validated on the training images)"
            + (f", decision offsets {details['decision_offsets']}" if "decision_offsets" in details else "")
            + f"; val_loss {history[0].val_loss:.4f}  val_{tasks.SCORE_NAMES[task]} {history[0].val_score:.4f}")
        return Trained(head, history, [name], best, head_fit=details)
    weights, sample_weights = loss_weights(task, train_y, len(dataset.classes), options)
    generator = torch.Generator().manual_seed(options.seed)
    loader = training_loader(torch.utils.data.TensorDataset(train_x, train_y), options.batch_size, generator,
                             sample_weights, run.context)

    @torch.no_grad()
    def validate() -> tuple[float, float, torch.Tensor]:
        head.eval()
        return tasks.score_logits(task, head(val_x), val_y, weights)

    trainer = torch.nn.parallel.DistributedDataParallel(head) if run.context.active else head
    phase = Phase(name, head, trainer, loader, validate, torch.optim.Adam(head.parameters(), lr=options.learning_rate),
                  generator, options.epochs)
    best = BestSoFar()
    history = fit(phase, task, best, weights, context=run.context,
                  on_epoch=epoch_printer(run, "epoch", options.epochs, task, say),
                  resume_from=run.checkpoint.phase(name),
                  on_checkpoint=lambda state: run.checkpoint.save_phase(name, state))
    head.load_state_dict(best.weights)
    return Trained(head, history, [name] * len(history), best)
