"""The fine-tuned candidates a budget tries: the backbone's last two stages on cached activations of its frozen
lower stages (`UpperStagesCandidate`), and the whole backbone on images decoded once at the data's resolution
(`WholeCandidate`), both with `tuning.py`'s recipe.

Each is measured before it is planned: `measure` times two training steps of a copy of its model on random inputs
and the decoding of a few images, from which `setup_seconds` estimates the activations to compute or the images to
decode; then `run` trains it for the epochs the budget gives (`budget.py`), checkpointed every epoch.
"""

from __future__ import annotations

import copy
import time
from functools import cached_property
from typing import Callable

import torch
from torch import nn

from vistrain.backbones.preprocess import Preprocess
from vistrain.core.console import progress_bar
from vistrain.core.device import autocast
from vistrain.data.images import load_pixels
from vistrain.features.activations import cached_activations, default_cut, lower_part
from vistrain.features.extract import extraction_threads
from vistrain.features.transforms import PixelNormalize, eval_transform
from vistrain.model import tasks
from vistrain.training.candidates import Job, Outcome, finish, linear_head
from vistrain.training.engine import EpochResult
from vistrain.training.selection import cross_fitted_epochs
from vistrain.training.tuning import (ActivationInputs, Inputs, PixelInputs, Recipe, Tuned, UpperStages,
                                      predict_inputs, tune)

MAX_EPOCHS = 12
BATCH = 64
MAX_DECODED_BYTES = 2 * 2**30  # the whole backbone trains on images held decoded in memory, up to this much
TIMED_BATCH = 32  # images in each timed step


class FineTuningCandidate:
    """A network part and a head trained on tensors (see `tuning.Inputs`) at `preprocess`'s resolution."""

    name = ""
    recipe = Recipe(epochs=MAX_EPOCHS, batch_size=BATCH)
    min_epochs = 3  # with fewer epochs than this in its share of the budget, it is not tried

    def __init__(self, job: Job, preprocess: Preprocess, cut: int | None = None):
        self.job, self.preprocess, self.given_cut = job, preprocess, cut

    @cached_property
    def model(self) -> nn.Module:
        """The backbone as a feature extractor, built when first needed."""
        return self.job.backbone.build_feature_extractor().to(memory_format=torch.channels_last)

    @property
    def cut(self) -> int:
        """Where the lower stages end (`features.activations.default_cut`, unless given)."""
        return default_cut(self.model) if self.given_cut is None else self.given_cut

    @property
    def changed(self) -> str:
        raise NotImplementedError

    def parts(self) -> tuple[nn.Module, list[list[nn.Parameter]]]:
        """The trained feature part and its parameter groups, earliest first (one per `recipe.features_lr`)."""
        raise NotImplementedError

    def example(self) -> torch.Tensor:
        """TIMED_BATCH random inputs of the right shape, for timing."""
        raise NotImplementedError

    def setup_seconds(self, views: list[str]) -> float:
        """Estimated seconds before the first epoch (computing activations, decoding images), once `measure`d."""
        raise NotImplementedError

    def inputs(self, views: list[str]) -> tuple[Inputs, Inputs, Inputs]:
        """(fit rows in `views`, held rows, validation images) as the model takes them."""
        raise NotImplementedError

    def refusal(self) -> str:
        """Why it cannot run on this data at all, or ""."""
        return ""

    def images(self) -> int:
        """How many images it trains on or scores: fit and held rows, validation images."""
        return len(self.job.fit) + len(self.job.held) + len(self.job.features.val_paths)

    def measure(self) -> float:
        """Seconds for an epoch over the fit rows and a scoring of the held rows, from the fastest of three timed
        training steps of a copy after a first one (load on a shared machine comes and goes; the first epoch's time
        corrects the plan, see `engine.fit`); also times decoding a few images."""
        transform = eval_transform(self.preprocess, output="uint8")
        sample = self.job.train_paths[:4]
        started = time.perf_counter()
        for path in sample:
            transform(load_pixels(path, reduce_to=self.preprocess.resize_size)[0])
        self.decode_seconds = (time.perf_counter() - started) / max(1, len(sample))
        features, groups = copy.deepcopy(self.parts())
        model = Tuned(features, linear_head(self.job), self.recipe.batch_size).to(self.job.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        example = self.example().to(self.job.device)
        units = tasks.output_units(self.job.task, len(self.job.dataset.classes))
        targets = torch.zeros(len(example), dtype=torch.long) if self.job.task in tasks.SINGLE_LABEL \
            else torch.zeros(len(example), units)
        times = []
        model.train()
        for _ in range(4):
            started = time.perf_counter()
            with autocast(self.job.device):
                loss = tasks.loss(self.job.task, model(example).float(), targets.to(self.job.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if self.job.device.type == "cuda":
                torch.cuda.synchronize(self.job.device)
            times.append(time.perf_counter() - started)
        return min(times[1:]) / len(example) * (len(self.job.fit) + len(self.job.held) / 3)  # scoring: a third

    def run(self, views: list[str], epochs: int, deadline: Callable[[], float],
            on_epoch: Callable[[EpochResult], None] = lambda r: None,
            on_checkpoint: Callable[[dict], None] | None = None) -> Outcome:
        """Train for up to `epochs` (fewer when `deadline()`, the seconds left, says so), keeping the epoch with the
        lowest held-out loss, and score it (`candidates.finish`) on the held rows as unseen images would score
        (`selection.cross_fitted_epochs`). After each epoch its state goes to `on_checkpoint` (by default, the run's
        checkpoint)."""
        started = time.perf_counter()
        job = self.job
        train_inputs, held_inputs, val_inputs = self.inputs(views)
        features, groups = self.parts()
        model = Tuned(features, linear_head(job), self.recipe.batch_size)
        recipe = Recipe(**{**self.recipe.__dict__, "epochs": epochs})
        history, best, phase, held_by_epoch = tune(
            model, groups, (train_inputs, job.targets(job.fit)), (held_inputs, job.targets(job.held)), job.task,
            recipe, job.options.seed, self.name, deadline, on_epoch, job.run.checkpoint.phase(self.name),
            on_checkpoint or (lambda state: job.run.checkpoint.save_phase(self.name, state)), job.device, MAX_EPOCHS)
        held_logits = cross_fitted_epochs(held_by_epoch, job.targets(job.held), job.task, job.options.seed)
        val_logits = predict_inputs(model, val_inputs, device=job.device)
        model.cpu()
        outcome = Outcome(self.name, self.changed, head=model.head.eval(), head_kind="linear",
                          backbone=self.model.eval(), preprocess=self.preprocess, history=history,
                          best_epoch=best.epoch,
                          settings={"candidate": self.name, "views": views, "epochs_planned": epochs,
                                    "epochs_run": len(history), "input_size": self.preprocess.input_size,
                                    "recipe": {**recipe.__dict__, "features_lr": list(recipe.features_lr)},
                                    "images_per_second": phase.images_per_second})
        outcome = finish(job, outcome, held_logits, val_logits)
        outcome.seconds = time.perf_counter() - started
        return outcome


class UpperStagesCandidate(FineTuningCandidate):
    """The backbone's last two stages (EfficientNet-Lite0: from the 192-channel blocks on, with `conv_head` and
    `bn2`) and the head, trained on the cached activations of the frozen stages below them (one cache per view)."""

    name = "upper-stages"
    recipe = Recipe(epochs=MAX_EPOCHS, batch_size=BATCH, learning_rate=1e-3, features_lr=(5e-4, 1e-3))

    @property
    def changed(self) -> str:
        return (f"blocks[{self.cut}:], conv_head and bn2 trained on cached activations of the frozen blocks below, "
                f"at {self.preprocess.input_size} px")

    def parts(self) -> tuple[nn.Module, list[list[nn.Parameter]]]:
        upper = UpperStages(self.model, self.cut)
        first = list(upper.blocks[0].parameters())
        rest = [p for module in (upper.blocks[1:], upper.conv_head, upper.bn2) for p in module.parameters()]
        return upper, [first, rest]

    def example(self) -> torch.Tensor:
        size = self.preprocess.input_size
        pixels = torch.zeros(TIMED_BATCH, 3, size, size, dtype=torch.uint8)
        lower = lower_part(self.model, self.preprocess, self.cut)
        with torch.no_grad():
            lower(pixels)
            started = time.perf_counter()
            shape = lower(pixels).shape[1:]
        # ONNX Runtime runs the lower stages faster than torch eager: `calibrate` sets what it measured
        self.lower_seconds = (time.perf_counter() - started) / TIMED_BATCH / 1.5
        return torch.randn(TIMED_BATCH, *shape).contiguous(memory_format=torch.channels_last)

    def calibrate(self, seconds_per_pass: float | None, preprocess: Preprocess) -> None:
        """Take ONNX Runtime's measured seconds per lower-stage pass (at `preprocess`) for the setup estimate."""
        if seconds_per_pass and preprocess == self.preprocess:
            self.lower_seconds = seconds_per_pass

    def setup_seconds(self, views: list[str]) -> float:
        """Every fit row in every view through the lower stages, the other images in one; each decoded once."""
        job = self.job
        passes = len(job.fit) * len(views) + len(job.held) + len(job.features.val_paths)
        return passes * self.lower_seconds + self.images() * self.decode_seconds / extraction_threads()[0]

    def inputs(self, views: list[str]) -> tuple[Inputs, Inputs, Inputs]:
        job = self.job

        def activations(paths: list, kept: list[str]) -> ActivationInputs:
            return ActivationInputs(cached_activations(paths, job.digests_of(paths), job.backbone, self.preprocess,
                                                       kept, self.cut, job.cache_dir, job.show_progress))

        fit_paths = [job.train_paths[i] for i in job.fit]
        held_paths = [job.train_paths[i] for i in job.held]
        return (activations(fit_paths, views), activations(held_paths, ["identity"]),
                activations(job.features.val_paths, ["identity"]))


class WholeCandidate(FineTuningCandidate):
    """Every layer of the backbone and the head, trained on the images decoded once at the data's resolution,
    shifted at random, every layer at one learning rate: the images it pays on (far smaller than the backbone's
    input) are unlike ImageNet down to the first layers (on the digits, 0.989 against 0.975 with the earliest
    stages at a quarter of the rate), in batches of 32 (twice the steps: 0.997). Every layer moving from ImageNet's
    weights needs more epochs than the upper stages to pay: on the elpv cells at 224 px, 3 epochs scored 0.51 macro F1
    against the upper stages' 0.56, and took the time the upper stages needed; it is tried with 6 at least."""

    name = "whole"
    recipe = Recipe(epochs=MAX_EPOCHS, batch_size=32, learning_rate=3e-3, features_lr=(1e-3,))
    min_epochs = 6

    @property
    def changed(self) -> str:
        return f"every layer trained on the images at {self.preprocess.input_size} px, shifted at random"

    def parts(self) -> tuple[nn.Module, list[list[nn.Parameter]]]:
        return self.model, [list(self.model.parameters())]

    def example(self) -> torch.Tensor:
        size = self.preprocess.input_size
        return torch.randn(TIMED_BATCH, 3, size, size).contiguous(memory_format=torch.channels_last)

    def refusal(self) -> str:
        needed = self.images() * 3 * self.preprocess.input_size ** 2
        return "" if needed <= MAX_DECODED_BYTES else (
            f"{self.images()} images at {self.preprocess.input_size} px need {needed / 2**30:.1f} GiB decoded, over "
            f"{MAX_DECODED_BYTES / 2**30:.0f} GiB")

    def setup_seconds(self, views: list[str]) -> float:
        """Every image decoded once."""
        return self.images() * self.decode_seconds

    def inputs(self, views: list[str]) -> tuple[Inputs, Inputs, Inputs]:
        job = self.job
        transform = eval_transform(self.preprocess, output="uint8")
        normalize = PixelNormalize(self.preprocess)

        def decoded(paths: list) -> torch.Tensor:
            images = []
            with progress_bar(f"decoding at {self.preprocess.input_size} px", len(paths), job.show_progress) as advance:
                for path in paths:
                    images.append(transform(load_pixels(path, reduce_to=self.preprocess.resize_size)[0]))
                    advance(1)
            return torch.stack(images)

        return (PixelInputs(decoded([job.train_paths[i] for i in job.fit]), normalize, views),
                PixelInputs(decoded([job.train_paths[i] for i in job.held]), normalize, ["identity"]),
                PixelInputs(decoded(job.features.val_paths), normalize, ["identity"]))
