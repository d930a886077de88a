"""The training job, step by step: start the run -> load the data -> features -> the head (or a budget's
candidates) -> fine-tuning (optional) -> score -> write the run directory (its schema: `vistrain.model.run_dir`).
The steps that train do it in phases (`engine.Phase`): the frozen head, fine-tuning, each budget candidate."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from vistrain.backbones import Backbone, get_backbone
from vistrain.backbones.multi_depth import with_stages
from vistrain.core.device import autocast_dtype, describe_device, halved_message, ignore, resolve_device
from vistrain.core.errors import OptionError
from vistrain.core.files import default_cache_dir, make_folder
from vistrain.core.messages import LOG, say, warn
from vistrain.data.class_names import class_labels, name_classes
from vistrain.data.datasets import load_dataset
from vistrain.data.samples import Dataset, Skipped
from vistrain.features.int8 import calibration_set
from vistrain.features.runtime import chosen_precision, int8_model_files
from vistrain.features.transforms import Augmentation
from vistrain.model import run_dir, tasks
from vistrain.model.metrics import HEADLINE, task_metrics, tune_thresholds
from vistrain.model.predictions import Predictions
from vistrain.model.run_config import BackboneConfig, HeadConfig, PartConfig, RunConfig
from vistrain.model.loaded import Model
from vistrain.model.run_dir import RunError
from vistrain.model.run_state import lock_run, start_run_dir, unlock_run
from vistrain.training import distributed
from vistrain.training.budget import budget_step, check_budget_options
from vistrain.training.checkpoint import Checkpoint, load_checkpoint
from vistrain.training.engine import EpochResult
from vistrain.training.features_step import FeatureSet, compute_features, warn_about_imbalance
from vistrain.training.fine_tune import PHASE as FINE_TUNE, fine_tune
from vistrain.training.frozen import FROZEN, Run, Trained, epoch_printer, loss_weights, train_head
from vistrain.training.options import TrainOptions

ROOM = 0.97  # below this validation accuracy, a run without --budget says that --budget may do better


@dataclass
class TrainResult:
    """What `train` and `resume` return: the run directory, its validation metrics (as in metrics.json), every
    epoch's losses and score, and the files left out, with their reasons; `load()` gives the trained model."""

    run_dir: Path
    metrics: dict
    history: list[EpochResult]
    skipped: list[Skipped]
    leaderboard: list[dict] = field(default_factory=list)  # with a budget: each candidate tried (leaderboard.csv)

    def load(self, *, device: str = "auto", cache_dir: Path | None = None) -> Model:
        """The trained model, ready to predict (see `vistrain.load`)."""
        return Model.from_run(self.run_dir, device=device, cache_dir=cache_dir)


def train(data: str | Path, out: str | Path | None = None, options: TrainOptions | None = None,
          cache_dir: Path | None = None, overwrite: bool = False, show_progress: bool = False,
          image_root: Path | None = None, checkpoint: Checkpoint | None = None,
          decisions: Path | None = None, class_names: Path | None = None,
          report: Callable[[Path], object] | None = None,
          on_epoch: Callable[[EpochResult], None] = ignore) -> TrainResult:
    """Train a head on frozen backbone features of the images in `data` (a folder, a label CSV whose paths are
    relative to `image_root`, or an SVHN .mat), then, with `options.fine_tune`, the backbone's last blocks with it,
    and write a run directory. Review decisions come from `decisions`, else the file beside the data (see
    `vistrain.data.decisions`); `class_names`, a mapping file, names the classes (`vistrain.data.class_names`).
    `report(run)` writes what else the run holds; `on_epoch` is told each epoch's result as it ends (its lines go to
    the `vistrain` logger: `vistrain.core.messages`). Until all of it is written, the run directory holds a
    checkpoint (see `resume`), and while it is written, its lock (`vistrain.model.run_state`)."""
    started = time.perf_counter()  # a --budget counts from here
    options = options or TrainOptions()
    if options.precision == "int8" and options.fine_tune:
        raise OptionError("{fine_tune} trains the backbone in fp32; int8 features are for a frozen backbone")
    device = resolve_device(options.device)  # before the data is read: a missing GPU stops the run at once
    check_budget_options(options)
    cache_dir = make_folder(cache_dir or default_cache_dir(), "the feature cache")  # a bad one stops us before the run
    dataset = load_dataset(data, options.val_fraction, options.seed, options.label_depth, options.task, image_root,
                           decisions, cache_dir)
    if class_names is not None:
        dataset.class_names = name_classes(dataset.classes, class_names)
    backbone = with_stages(get_backbone(options.backbone), tuple(options.feature_stages))
    # Seeded training images: the int8 backbone's calibration, or `export --int8`'s later.
    calibration = calibration_set([s.path for s in dataset.train], options.seed)
    precision, why = chosen_precision(options.precision, calibration, backbone, cache_dir,
                                      trains_backbone=bool(options.fine_tune or options.budget))
    options = replace(options, precision=precision.name)  # the checkpoint and config.json record what `auto` chose
    run = start_run(data, out, options, overwrite, image_root, decisions, checkpoint, class_names, device)
    run.started, run.on_epoch = started, on_epoch
    try:
        describe_data(dataset, class_names)
        if why != "asked for" and precision.name != "fp32":  # fp32 runs say what they always said
            say(f"precision: {precision.name} ({why})")
        features = compute_features(dataset, backbone, precision, cache_dir, options.augment_views, run.context,
                                    show_progress, run.device)
        if precision.name == "int8" and run.context.is_main:
            run_dir.save_int8_models(run.path, int8_model_files(backbone, backbone.preprocess, cache_dir, precision))
        if options.budget:
            trained = budget_step(features, dataset, backbone, options, run, cache_dir, run.device, show_progress)
        else:
            trained = train_head(features, dataset, backbone, options, run)
        if options.fine_tune:
            trained = fine_tune_step(trained, features, dataset, backbone, options, run)
        metrics, predictions = score(trained, features, dataset, run)
        if run.context.is_main:
            write_run(run, data, dataset, backbone, options, calibration, trained, features, metrics, predictions)
            if not options.budget and not options.fine_tune and metrics.get("accuracy", 1.0) < ROOM:
                say(f"frozen features may be the ceiling on these images (validation accuracy "
                    f"{metrics['accuracy']:.3f}): a budget of 10 minutes (--budget 10m) also tries fine-tuning the "
                    "backbone (see docs/training.md, --budget)")
            if report is not None:
                report(run.path)
            run.checkpoint.remove()  # now the run is complete
    finally:
        if run.lock is not None:
            unlock_run(run.lock)
    return TrainResult(run.path, metrics, trained.history, dataset.skipped + features.skipped, trained.leaderboard)


def resume(run: str | Path, cache_dir: Path | None = None, show_progress: bool = False,
           report: Callable[[Path], object] | None = None,
           on_epoch: Callable[[EpochResult], None] = ignore) -> TrainResult:
    """Continue a `train` that was interrupted (Ctrl-C, kill -9, power cut, a full disk) from RUN's last checkpoint:
    the features come from the cache, the head from the last finished epoch; the result is the same as an
    uninterrupted run's."""
    run = Path(run)
    if (run / run_dir.CONFIG).is_file() and not (run / run_dir.CHECKPOINT).exists():
        raise RunError(f"{run} is complete; there is nothing to resume")
    checkpoint = load_checkpoint(run)
    job = checkpoint.state["job"]
    epochs_done = sum(len(state["history"]) for state in checkpoint.state["phases"].values())
    say(f"resuming {run} after epoch {epochs_done}")
    return train(job["data"], run, TrainOptions(**job["options"]), cache_dir, show_progress=show_progress,
                 image_root=Path(job["image_root"]) if job["image_root"] else None, checkpoint=checkpoint,
                 decisions=Path(job["decisions"]) if job.get("decisions") else None,
                 class_names=Path(job["class_names"]) if job.get("class_names") else None, report=report,
                 on_epoch=on_epoch)


def start_run(data: str | Path, out: str | Path | None, options: TrainOptions, overwrite: bool,
              image_root: Path | None, decisions: Path | None, checkpoint: Checkpoint | None,
              class_names: Path | None = None, device: torch.device = torch.device("cpu")) -> Run:
    """Join torchrun's processes, if any, for work on `device`; create the run directory (rank 0 picks it, the
    others learn where) and its checkpoint, or continue `checkpoint`. The other processes leave what the run says
    to rank 0."""
    context = distributed.setup(device)
    if not context.is_main:
        LOG.setLevel(logging.ERROR)
    if device.type == "cuda":
        say(f"device: {describe_device(device)}, mixed precision {str(autocast_dtype(device)).removeprefix('torch.')}")
    if checkpoint is not None:
        checkpoint.writes = context.is_main
        return Run(checkpoint.path.parent, checkpoint, context, device,
                   lock_run(checkpoint.path.parent) if context.is_main else None)
    path, lock = start_run_dir(out, overwrite) if context.is_main else (None, None)
    path = distributed.share(context, path)
    job = {"data": str(Path(data).resolve()), "image_root": str(image_root.resolve()) if image_root else None,
           "decisions": str(Path(decisions).resolve()) if decisions else None,
           "class_names": str(Path(class_names).resolve()) if class_names else None, "options": asdict(options)}
    checkpoint = Checkpoint(path, job, writes=context.is_main)
    try:
        checkpoint.save()
    except BaseException:
        if lock is not None:
            unlock_run(lock)
        raise
    return Run(path, checkpoint, context, device, lock)


def describe_data(dataset: Dataset, names_from: Path | None = None) -> None:
    """The data, task and classes (with their names from `names_from`, if given, and how many it has) as lines."""
    say(f"data: {dataset.layout}")
    say(f"task: {dataset.task} ({dataset.task_reason})")
    names = dataset.class_names
    say(("classes: " if dataset.task in tasks.SINGLE_LABEL else "outputs: ")
        + ", ".join(f"{i} = {c}" + (f" ({names[c]})" if c in names else "")
                    for i, c in enumerate(dataset.classes)))
    if names_from is not None:
        unnamed = [c for c in dataset.classes if c not in names]
        say(f"class names from {names_from}: {len(names)} of {len(dataset.classes)} classes"
            + (f"; {len(unnamed)} not in it, shown by their ids: {', '.join(unnamed[:10])}"
               + (", ..." if len(unnamed) > 10 else "") if unnamed else ""))
    say(f"images: {len(dataset.train)} for training, {len(dataset.val)} for validation")
    warn_about_imbalance(dataset)


def fine_tune_step(trained: Trained, features: FeatureSet, dataset: Dataset, backbone: Backbone,
                   options: TrainOptions, run: Run) -> Trained:
    """Unfreeze the backbone's last blocks and train them with the head on the images; kept only if an epoch beats
    the frozen head's validation loss."""
    task = dataset.task
    extractor = backbone.build_feature_extractor()
    say(f"fine-tuning the last {options.fine_tune} blocks (learning rate {options.backbone_lr:g}; "
        f"head {options.learning_rate:g}) on the images, augmented")
    weights, sample_weights = loss_weights(task, features.train_images[1], len(dataset.classes), options)
    tuned = fine_tune(
        extractor, trained.head, features.train_images, (features.val_paths, features.val[1]), task,
        backbone.preprocess, options.fine_tune, options.fine_tune_epochs, options.batch_size, options.learning_rate,
        options.backbone_lr, options.patience, options.seed, trained.best, weights, sample_weights,
        on_epoch=epoch_printer(run, "fine-tune", options.fine_tune_epochs, task),
        resume_from=run.checkpoint.phase(FINE_TUNE),
        on_checkpoint=lambda state: run.checkpoint.save_phase(FINE_TUNE, state), context=run.context,
        device=run.device, on_halve=lambda size: warn(halved_message("fine-tuning batches", size)),
    )
    if tuned.images_per_second:
        say(f"fine-tuning: {tuned.images_per_second:.1f} training images/s")
    if not tuned.improved:
        warn(f"fine-tuning did not beat the frozen head's validation loss ({trained.best.loss:.4f}); "
             "keeping the frozen head and the pretrained backbone")
    settings = {"blocks": options.fine_tune, "unfrozen": tuned.unfrozen, "backbone_lr": options.backbone_lr,
                "head_lr": options.learning_rate, "epochs": options.fine_tune_epochs,
                "epochs_run": len(tuned.history), "patience": options.patience,
                "augmentation": Augmentation().to_dict(), "improved": tuned.improved}
    offset = len(trained.history)
    return replace(trained, history=trained.history + [replace(r, epoch=offset + r.epoch) for r in tuned.history],
                   phases=trained.phases + [FINE_TUNE] * len(tuned.history),
                   backbone=extractor if tuned.improved else None,
                   fine_tune={**settings, "images_per_second": tuned.images_per_second})


def best_epoch(trained: Trained) -> int:
    """The best epoch, numbered across phases as in history.csv."""
    return trained.best.epoch + (trained.phases.count(FROZEN) if trained.best.phase == FINE_TUNE else 0)


def score(trained: Trained, features: FeatureSet, dataset: Dataset, run: Run) -> tuple[dict, Predictions]:
    """The best epoch's validation metrics (multi-label: with each label's threshold tuned on them) and
    predictions."""
    task = dataset.task
    val_targets, val_outputs = features.val[1].numpy(), trained.best.outputs.numpy()
    thresholds = tune_thresholds(val_targets, val_outputs) if task == "multilabel" else None
    metrics = task_metrics(task, val_targets, val_outputs, class_labels(dataset.classes, dataset.class_names),
                           thresholds)
    metrics.update(
        task=task, best_epoch=best_epoch(trained), val_loss=trained.best.loss, n_train=len(features.train_images[0]),
        n_skipped=len(dataset.skipped) + len(features.skipped),
        timing={"wall_seconds": round(time.perf_counter() - run.started, 2), "features_computed": features.computed,
                "features_per_second": features.images_per_second, "processes": run.context.world_size,
                "device": describe_device(run.device),
                **({"fine_tune_images_per_second": trained.fine_tune["images_per_second"]}
                   if trained.fine_tune else {})},
    )
    return metrics, Predictions(features.val_paths, val_targets, val_outputs, dataset.classes, task, thresholds)


def write_run(run: Run, data: str | Path, dataset: Dataset, backbone: Backbone, options: TrainOptions,
              calibration: tuple[tuple[str, str], ...], trained: Trained, features: FeatureSet, metrics: dict,
              predictions: Predictions) -> None:
    """Write the run directory's files (config.json last); the checkpoint stays until the report is written."""
    fine_tune = {key: value for key, value in trained.fine_tune.items() if key != "images_per_second"}
    if trained.backbone is not None:
        fine_tune.update(run_dir.save_backbone(run.path, trained.backbone))
    backbone = trained.feature_backbone or backbone
    backbone = replace(backbone, preprocess=trained.preprocess or backbone.preprocess)  # what predicting uses
    options = replace(options, head=trained.head_kind or options.head, backbone=backbone.name)
    run_dir.write_trained_run(
        run.path, head=trained.head, metrics=metrics, history=trained.history, phases=trained.phases,
        score_name=tasks.SCORE_NAMES[dataset.task], predictions=predictions, skipped=dataset.skipped + features.skipped,
        leaderboard=trained.leaderboard,
        config=RunConfig(
            BackboneConfig(backbone.name, backbone.weights, backbone.feature_dim, tuple(options.feature_stages),
                           tuple(PartConfig(part.name, part.preprocess) for part in backbone.parts) or None),
            backbone.preprocess, tuple(dataset.classes), dataset.task,
            HeadConfig(options.head, options.hidden, options.dropout, trained.head_fit), options.precision, calibration,
            dataset.class_names, None if predictions.thresholds is None else tuple(predictions.thresholds),
            training={**asdict(options), "task": dataset.task, "optimizer": "adam", "best_epoch": best_epoch(trained),
                      "best_epoch_rule": "lowest validation loss, across phases"},
            fine_tune=fine_tune, budget=trained.budget,
            data={"source": str(Path(data).resolve()), "layout": dataset.layout,
                  "n_train": len(features.train_images[0]), "n_val": len(features.val_paths)}))
    headline = metrics[HEADLINE[dataset.task]]
    say(f"best epoch {metrics['best_epoch']}: validation {HEADLINE[dataset.task].replace('_', ' ')} "
        f"{headline:.4f} on {len(features.val_paths)} images; run saved in {run.path}")
