"""What a budget tries (`budget.py` schedules it): each candidate trains on the inner split's fit part, is
scored on its held part — the score it is chosen by (`selection.py`) — and, for the record, on the validation
split. This module holds what every candidate shares (`Job`, `Outcome`), the frozen heads, and the test of which
views of an image keep its label; the fine-tuned candidates are in `fine_tuning.py`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vistrain.backbones import Backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.core.device import ignore
from vistrain.core.files import sha256_file
from vistrain.core.messages import quiet
from vistrain.data.samples import Dataset
from vistrain.features.activations import VIEWS, cached_activations, default_cut
from vistrain.model import tasks
from vistrain.model.heads import build_head
from vistrain.training.engine import EpochResult
from vistrain.training.features_step import FeatureSet
from vistrain.training.options import TrainOptions
from vistrain.training.selection import cross_fitted_offsets, selection_score
from vistrain.training.frozen import Run, train_head

FROZEN_HEADS = {"logistic": "a logistic regression on the frozen features, in closed form",
                "mlp": "the course's MLP head on the frozen features"}
VIEW_TOLERANCE = 0.02  # a view keeps labels when the reference head scores within this (or 2 standard errors)
VIEW_TEST_IMAGES = 160  # held-out images the views are tested on, at most
TESTED_VIEWS = ("hflip", "vflip", "rot90")  # the generators of the square's symmetries; the rest follow


@dataclass
class Job:
    """What every candidate works from: the frozen features, the data, the run, and the inner split's rows."""

    features: FeatureSet
    dataset: Dataset
    backbone: Backbone
    options: TrainOptions
    run: Run
    fit: np.ndarray  # rows of features.train trained on
    held: np.ndarray  # rows of features.train each candidate is chosen by
    cache_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    show_progress: bool = False  # progress bars for what takes long (activations, decoding, features)
    digests: dict[Path, str] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.dataset.task

    @property
    def train_paths(self) -> list[Path]:
        return self.features.train_images[0]

    def targets(self, rows: np.ndarray) -> torch.Tensor:
        return self.features.train[1][torch.from_numpy(rows)]

    def digests_of(self, paths: list[Path]) -> list[str]:
        """The files' SHA-256, each read once per run."""
        for path in paths:
            if path not in self.digests:
                self.digests[path] = sha256_file(path)
        return [self.digests[path] for path in paths]

    def score(self, outputs: np.ndarray, on: str) -> float:
        """The selection metric of outputs for the `held` rows or the `val` images."""
        targets = self.targets(self.held) if on == "held" else self.features.val[1]
        return selection_score(self.task, targets.numpy(), outputs, self.dataset.classes)


@dataclass
class Outcome:
    """One candidate tried: its leaderboard row and, when it trained, the model it leaves."""

    name: str
    changed: str
    seconds: float = 0.0
    selection: float | None = None  # the selection metric on the held rows
    selection_loss: float = float("inf")
    validation: float | None = None
    note: str = ""  # why it was not tried, or how it ended
    ruled_out: bool = False  # tried, but not to be chosen (the note says why)
    head: nn.Module | None = None
    head_kind: str = ""
    head_fit: dict = field(default_factory=dict)
    backbone: nn.Module | None = None  # a fine-tuned feature extractor (images -> features)
    feature_backbone: Backbone | None = None  # the pretrained backbone of its frozen features, when not the job's
    features: FeatureSet | None = None  # and those features
    preprocess: Preprocess | None = None  # set when it differs from the backbone's
    val_outputs: torch.Tensor | None = None
    held_logits: torch.Tensor | None = None  # of the head as it stands (decision offsets included)
    val_logits: torch.Tensor | None = None
    val_loss: float = float("inf")
    history: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 1
    settings: dict = field(default_factory=dict)  # what config.json records of a fine-tuning

    @property
    def tried(self) -> bool:
        return self.selection is not None

    @property
    def eligible(self) -> bool:
        return self.tried and not self.ruled_out

    def row(self, metric: str, chosen: bool) -> dict:
        """The leaderboard row."""
        def shown(value: float | None) -> str:
            return "" if value is None else f"{value:.4f}"

        return {"candidate": self.name, "changed": self.changed, f"selection_{metric}": shown(self.selection),
                "selection_loss": shown(self.selection_loss if self.tried else None),
                f"validation_{metric}": shown(self.validation), "seconds": f"{self.seconds:.1f}",
                "chosen": "yes" if chosen else "", "note": self.note}


def last_linear(head: nn.Module) -> nn.Linear:
    """The head's last linear layer (the one that gives the logits)."""
    return [module for module in head.modules() if isinstance(module, nn.Linear)][-1]


def add_offsets(head: nn.Module, offsets: np.ndarray) -> None:
    """Add multi-class decision offsets to the bias of the head's last linear layer (softmax outputs move as if
    they had been added to the log-probabilities)."""
    last = last_linear(head)
    with torch.no_grad():
        last.bias += torch.as_tensor(offsets, dtype=last.bias.dtype)


def finish(job: Job, outcome: Outcome, held_logits: torch.Tensor, val_logits: torch.Tensor) -> Outcome:
    """Score a trained candidate from its logits: held-out loss and metric (multi-class: with decision offsets
    cross-fitted on the held rows, the offsets tuned on all of them then added to the head), validation metric."""
    task, held_targets = job.task, job.targets(job.held)
    loss, _, held_outputs = tasks.score_logits(task, held_logits, held_targets)
    held_outputs = held_outputs.numpy()
    if task == "multiclass" and "decision_offsets" not in outcome.head_fit:
        offsets, held_outputs = cross_fitted_offsets(held_outputs, held_targets.numpy(), job.options.seed)
        add_offsets(outcome.head, offsets)
        held_logits = held_logits + torch.as_tensor(offsets, dtype=held_logits.dtype)
        val_logits = val_logits + torch.as_tensor(offsets, dtype=val_logits.dtype)
        outcome.head_fit = {**outcome.head_fit, "decision_offsets": [round(float(v), 2) for v in offsets],
                            "offsets_rule": "macro F1 of the held-out training images, cross-fitted"}
    val_loss, _, val_outputs = tasks.score_logits(task, val_logits, job.features.val[1])
    return replace(outcome, selection=job.score(held_outputs, "held"), selection_loss=loss,
                   validation=job.score(val_outputs.numpy(), "val"), val_outputs=val_outputs, val_loss=val_loss,
                   held_logits=held_logits, val_logits=val_logits)


def frozen_head(job: Job, kind: str, features: FeatureSet | None = None, backbone: Backbone | None = None) -> Outcome:
    """A head of `kind` on the frozen features of the fit rows (the job's, or `features` of `backbone`), its best
    epoch chosen on the held rows."""
    started = time.perf_counter()
    features, backbone = features or job.features, backbone or job.backbone
    x, y = features.train
    fit_rows, held_rows = torch.from_numpy(job.fit), torch.from_numpy(job.held)
    part = replace(features, train=(x[fit_rows], y[fit_rows]), val=(x[held_rows], y[held_rows]))
    trained = train_head(part, job.dataset, backbone, replace(job.options, head=kind),
                         replace(job.run, on_epoch=ignore), name=kind, say=quiet)
    head = trained.head.eval()
    with torch.no_grad():
        held_logits, val_logits = head(x[held_rows]), head(features.val[0])
    outcome = Outcome(kind, FROZEN_HEADS[kind], head=head, head_kind=kind, head_fit=trained.head_fit,
                      history=trained.history, best_epoch=trained.best.epoch)
    outcome = finish(job, outcome, held_logits, val_logits)
    return replace(outcome, seconds=time.perf_counter() - started)


def label_keeping_views(job: Job, reference: nn.Module) -> tuple[list[str], dict[str, float], float | None]:
    """The views (`features.activations.VIEWS`) that keep an image's label, found by validation, not by name: the
    `reference` head (trained on the fit rows' plain features) scores held-out images seen each way, and a view
    is kept unless its score falls below the plain images' by more than chance explains — two standard errors
    of that score on these images, at least VIEW_TOLERANCE (for regression, 5% of the error) — with the
    compositions of kept views. Returns the kept views, identity first, each tested view's score, and the seconds
    a lower-stage pass took (None when every one was cached)."""
    rows = np.random.default_rng(job.options.seed).permutation(job.held)[:VIEW_TEST_IMAGES]
    paths = [job.train_paths[i] for i in rows]
    tested = ("identity", *TESTED_VIEWS)
    model = job.backbone.build_feature_extractor()
    cut = default_cut(model)
    activations = cached_activations(paths, job.digests_of(paths), job.backbone, job.backbone.preprocess,
                                     list(tested), cut, job.cache_dir, job.show_progress)
    from vistrain.training.tuning import UpperStages

    upper, targets = UpperStages(model, cut).eval(), job.targets(rows).numpy()
    scores = {}
    with torch.no_grad():
        for v, view in enumerate(tested):
            logits = reference(upper(activations.batch(np.arange(len(rows)), np.full(len(rows), v))))
            scores[view] = selection_score(job.task, targets, tasks.outputs(job.task, logits).numpy(),
                                           job.dataset.classes)
    plain = scores["identity"]
    tolerance = max(VIEW_TOLERANCE, 2 * math.sqrt(plain * (1 - plain) / len(rows))) if job.task != "regression" else 0
    keeps = {view: (score <= plain * 1.05) if job.task == "regression" else (score >= plain - tolerance)
             for view, score in scores.items()}
    kept = [view for view in ("identity", *TESTED_VIEWS) if keeps[view]]
    if keeps["hflip"] and keeps["vflip"]:
        kept.append("rot180")
    if keeps["rot90"]:
        kept += [view for view in ("rot180", "rot270") if view not in kept]
    seconds = activations.seconds / (activations.computed * len(tested)) if activations.computed else None
    return [view for view in VIEWS if view in kept], scores, seconds


def linear_head(job: Job) -> nn.Module:
    """A new `linear` head for the task (dropout -> output), seeded; for regression, scaled to the fit rows'
    targets."""
    torch.manual_seed(job.options.seed)
    head = build_head("linear", job.backbone.feature_dim, tasks.output_units(job.task, len(job.dataset.classes)),
                      dropout=job.options.dropout, rescale=job.task == "regression")
    if job.task == "regression":
        head[-1].fit(job.targets(job.fit))
    return head
