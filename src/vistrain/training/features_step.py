"""The training job's features step: every image's features from the cache (computing the missing ones, sharded
across torchrun's processes), as tensors for the head, with the checks that need the files' digests."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vistrain.backbones import Backbone
from vistrain.core.device import halved_message
from vistrain.core.messages import say, warn
from vistrain.data.samples import DataError, Dataset, Sample, Skipped
from vistrain.data.splits import digest_leaks
from vistrain.features.extract import Features, extract_features
from vistrain.features.precision import Precision
from vistrain.features.transforms import Augmentation, View
from vistrain.model import tasks
from vistrain.training import distributed
from vistrain.training.distributed import Context


@dataclass
class FeatureSet:
    """Features and targets of the readable images: `train` (with any augmented views) and `val` for the head;
    `train_images` (paths, targets; no views) for fine-tuning on the images themselves."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    train_images: tuple[list[Path], torch.Tensor]
    val_paths: list[Path]
    skipped: list[Skipped]
    computed: int  # features computed now (by this process, or by rank 0 under torchrun)
    images_per_second: float | None


def compute_features(dataset: Dataset, backbone: Backbone, precision: Precision, cache_dir: Path | None,
                     augment_views: int, context: Context, show_progress: bool,
                     device: torch.device | None = None) -> FeatureSet:
    """Features of `dataset`'s training and validation images in `precision` (see `FeatureSet`), the missing ones
    computed on `device` (see `extract_features`)."""
    samples = dataset.train + dataset.val
    paths = [s.path for s in samples]
    extract = partial(extract_features, backbone=backbone, preprocess=backbone.preprocess, cache_dir=cache_dir,
                      show_progress=show_progress, precision=precision, device=device,
                      on_halve=lambda size: warn(halved_message("feature batches", size)))
    share = extract(paths[context.rank::context.world_size]) if context.active else None
    distributed.barrier(context)  # every process's share is in the cache
    features = extract(paths)
    computed = share or features
    rate = computed.computed / computed.compute_seconds if computed.computed else None
    which = "" if precision.name == "fp32" else f" ({precision.name})"  # fp32 says what it always said
    say(f"features{which}: {computed.computed} computed" + (f" ({rate:.1f} img/s)" if rate else "")
        + (f" by rank 0 of {context.world_size} processes" if context.active
           else f", {len(features.kept) - features.computed} from the cache"))
    n_train = len(dataset.train)
    warn_about_leaks(features.digests, samples, n_train)
    train_kept = [i for i in features.kept if i < n_train]
    val_kept = [i for i in features.kept if i >= n_train]
    # kept is in input order, training images first: slices are views, so a memory-mapped matrix stays on disk
    train_xy = (torch.from_numpy(features.vectors[: len(train_kept)]), _targets(dataset.task, samples, train_kept))
    val_xy = (torch.from_numpy(features.vectors[len(train_kept):]), _targets(dataset.task, samples, val_kept))
    check_usable(dataset.task, train_xy[1], val_xy[1], dataset.classes)
    train_images = ([samples[i].path for i in train_kept], train_xy[1])
    if augment_views:
        train_xy = with_augmented_views(train_xy, train_images[0], augment_views, extract)
        say(f"training on {len(train_xy[1])} feature vectors: each training image and {augment_views} "
            f"augmented version(s) of it ({Augmentation().to_dict()})")
    return FeatureSet(train_xy, val_xy, train_images, [samples[i].path for i in val_kept], features.skipped,
                      computed.computed, rate)


def _targets(task: str, samples: list[Sample], kept: list[int]) -> torch.Tensor:
    return tasks.target_tensor(task, [samples[i].target for i in kept])


def warn_about_leaks(digests: dict[int, str], samples: list[Sample], n_train: int) -> None:
    """The cheap part of `vistrain check`: the same file bytes in training and validation inflate accuracy."""
    train = {d: samples[i].path for i, d in digests.items() if i < n_train}
    val = {d: samples[i].path for i, d in digests.items() if i >= n_train}
    leaks = digest_leaks(train, val)
    if leaks:
        warn(f"warning: {len(leaks)} image(s) are in both training and validation (exact duplicates), "
            "which inflates validation accuracy; `vistrain check` lists them and near duplicates:")
        for train_path, val_path in leaks[:10]:
            warn(f"  {train_path} = {val_path}")


def with_augmented_views(train_xy: tuple[torch.Tensor, torch.Tensor], paths: list[Path], views: int,
                         extract: Callable[..., Features]) -> tuple[torch.Tensor, torch.Tensor]:
    """The training features and targets plus those of `views` augmented versions of every training image, by
    `extract` (`extract_features` of the backbone; cached like any features: the same file and view number always
    give the same augmentation)."""
    vectors, targets = [train_xy[0]], [train_xy[1]]
    for index in range(1, views + 1):
        view = View("augmented", index, Augmentation())
        augmented = extract(paths, view=view)
        vectors.append(torch.from_numpy(augmented.vectors))
        targets.append(train_xy[1][augmented.kept])
    return torch.cat(vectors), torch.cat(targets)


def warn_about_imbalance(dataset: Dataset) -> None:
    """Single-label data where one class holds over 80% of the training images: accuracy alone misleads."""
    if dataset.task not in tasks.SINGLE_LABEL or not dataset.train:
        return
    counts = np.bincount([s.target for s in dataset.train], minlength=len(dataset.classes))
    top = int(counts.argmax())
    if counts[top] > 0.8 * counts.sum():
        warn(f"warning: class {dataset.classes[top]} holds {counts[top] / counts.sum():.0%} of the "
            "training images; accuracy will flatter the model (look at per-class recall), and consider "
            "class_weight or sampler balanced")


def check_usable(task: str, train_targets: torch.Tensor, val_targets: torch.Tensor, classes: list[str]) -> None:
    """After unreadable files are dropped, every class still needs training images, and validation some images."""
    if task in tasks.SINGLE_LABEL:
        missing = [name for i, name in enumerate(classes) if not (train_targets == i).any()]
    elif task == "multilabel":
        missing = [name for j, name in enumerate(classes) if not train_targets[:, j].any()]
    else:
        missing = []
    if missing:
        raise DataError(f"no readable training images left for class(es): {', '.join(missing)}")
    if len(val_targets) == 0:
        raise DataError("no readable validation images; add images or raise val_fraction")
