"""The `larger-backbone` candidate a budget tries: a logistic head on the frozen features of a larger pretrained
backbone (after EfficientNet-Lite0 and -Lite1: EfficientNet-Lite2, at 260 px). On photos like ImageNet's it is the
cheapest gain — one more feature pass (cats-vs-dogs, frozen: Lite0 99.0%, Lite2 99.8%) — where fine-tuning Lite0
pays nothing.

It is tried only on images at least as large as the backbone's input (smaller ones gain nothing from a larger
input; the fine-tuned candidates train them at their own size) and only when its feature pass fits: the first
`TIMED` images' features are timed (they stay cached, like every feature), and the others are computed only when
their estimate fits `SHARE` of the time left, so the fine-tuned candidates after it keep theirs.

Which backbone's frozen features are better is then settled on every training image, not only the held-out few
(`settle`): 76 held-out cats and dogs cannot tell 99.2% from 99.6%, both score 100%. Both logistic heads are
cross-validated (5 folds, seconds) and the worse one is ruled out of the choice.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vistrain.backbones import Backbone, get_backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.core.messages import say
from vistrain.features.extract import Features, extract_features
from vistrain.model import tasks
from vistrain.model.linear import out_of_sample
from vistrain.training.candidates import Job, Outcome, frozen_head
from vistrain.training.features_step import FeatureSet
from vistrain.training.selection import SELECTION_METRIC, better, selection_score

NAME = "larger-backbone"
LARGER = {"efficientnet_lite0": "efficientnet_lite2", "efficientnet_lite1": "efficientnet_lite2"}
WARM_UP = 4  # images whose features build (or load) the larger backbone's session before the timing
TIMED = 32  # images whose features are timed
SHARE = 0.4  # its feature pass is computed when its estimate fits this share of the time left
FOLDS = 5


def changed(backbone: Backbone | None) -> str:
    what = "a larger pretrained backbone" if backbone is None else (
        f"{backbone.name} at {backbone.preprocess.input_size} px, a larger pretrained backbone")
    return f"a logistic regression on the frozen features of {what}"


def larger_backbone(job: Job, data_preprocess: Preprocess) -> tuple[Backbone | None, str]:
    """The larger backbone to try on this data (`data_preprocess`: the resolution the data calls for, see
    `resolution.py`), or None and why none is tried."""
    name = LARGER.get(job.backbone.name)
    if name is None or job.options.feature_stages:
        return None, f"no larger backbone follows {job.backbone.name} here"
    if job.options.augment_views:
        return None, "it takes no augment_views"
    if data_preprocess != job.backbone.preprocess:
        return None, (f"the images are smaller than {job.backbone.name}'s {job.backbone.preprocess.input_size} px "
                      "input; a larger input adds nothing")
    backbone = get_backbone(name)
    if not backbone.installed:
        return None, f"{name}'s weights are not installed ({backbone.install})"
    return backbone, ""


def features_of(job: Job, backbone: Backbone, paths: list[Path]) -> Features:
    """fp32 features of `paths` by `backbone`, from the cache or computed on the job's device."""
    return extract_features(paths, backbone, backbone.preprocess, cache_dir=job.cache_dir,
                            show_progress=job.show_progress, device=job.device)


def feature_set(job: Job, backbone: Backbone) -> FeatureSet | None:
    """The job's training and validation images' features by `backbone` (rows as the job's), or None when it
    could not read every image the job's backbone read."""
    paths = [*job.train_paths, *job.features.val_paths]
    found = features_of(job, backbone, paths)
    if len(found.kept) != len(paths):
        return None
    n = len(job.train_paths)
    vectors = torch.from_numpy(found.vectors)
    return replace(job.features, train=(vectors[:n], job.features.train[1]), val=(vectors[n:], job.features.val[1]))


def try_larger_backbone(job: Job, data_preprocess: Preprocess, seconds_left: Callable[[], float]) -> Outcome:
    """The candidate's outcome: trained, or not tried and why (see the module's docstring)."""
    backbone, why = larger_backbone(job, data_preprocess)
    if backbone is None or seconds_left() <= 0:
        return Outcome(NAME, changed(backbone), note=f"not tried: {why or 'the budget was spent'}")
    started = time.perf_counter()
    paths = [*job.train_paths, *job.features.val_paths]
    features_of(job, backbone, paths[:WARM_UP])
    timed = time.perf_counter()
    features_of(job, backbone, paths[WARM_UP:WARM_UP + TIMED])
    per_image = (time.perf_counter() - timed) / max(1, len(paths[WARM_UP:WARM_UP + TIMED]))
    estimate = per_image * max(0, len(paths) - WARM_UP - TIMED)
    if estimate > SHARE * seconds_left():
        return Outcome(NAME, changed(backbone), seconds=time.perf_counter() - started, note=(
            f"not tried: its features need about {estimate:.0f} s; {max(0.0, seconds_left()):.0f} s were left"))
    if estimate >= 1:
        say(f"{NAME}: {backbone.name}'s features of {len(paths)} images, about {estimate:.0f} s")
    features = feature_set(job, backbone)
    if features is None:
        return Outcome(NAME, changed(backbone), seconds=time.perf_counter() - started,
                       note=f"not tried: {backbone.name} could not read every image")
    outcome = frozen_head(job, "logistic", features, backbone)
    return replace(outcome, name=NAME, changed=changed(backbone), feature_backbone=backbone, features=features,
                   seconds=time.perf_counter() - started)


def cross_validated(job: Job, features: FeatureSet) -> tuple[float, float]:
    """(selection metric, loss) of a logistic regression's out-of-fold predictions for every training image on
    `features`: log loss (single-label), binary cross-entropy (multi-label) or squared error (regression)."""
    targets = job.features.train[1].numpy()
    _, outputs = out_of_sample(features.train[0].numpy().astype(np.float64), targets, job.task, FOLDS,
                               job.options.seed)
    if job.task in tasks.SINGLE_LABEL:
        loss = -np.log(np.clip(outputs[np.arange(len(targets)), targets], 1e-12, 1)).mean()
    elif job.task == "multilabel":
        p = np.clip(outputs, 1e-12, 1 - 1e-12)
        loss = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean()
    else:
        loss = ((outputs.reshape(targets.shape) - targets) ** 2).mean()
    return selection_score(job.task, targets, outputs, job.dataset.classes), float(loss)


def settle(job: Job, logistic: Outcome, larger: Outcome) -> tuple[Outcome, Outcome]:
    """The two logistic heads with the worse backbone's ruled out of the choice, by `cross_validated` scores on
    every training image (see the module's docstring); both notes say what was measured."""
    scores = {outcome.name: cross_validated(job, outcome.features or job.features) for outcome in (logistic, larger)}
    larger_wins = better(job.task, *scores[larger.name], scores[logistic.name])
    metric = SELECTION_METRIC[job.task].replace("_", " ")
    said = (f"cross-validated on all {len(job.features.train[1])} training images: {metric} "
            + ", ".join(f"{name} {score:.4f} (loss {loss:.4f})" for name, (score, loss) in scores.items()))
    loser = logistic if larger_wins else larger
    return tuple(replace(outcome, ruled_out=outcome is loser, note="; ".join(filter(None, (
        outcome.note, said + ("; ruled out" if outcome is loser else ""))))) for outcome in (logistic, larger))
