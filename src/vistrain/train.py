"""The whole training job: data -> features -> head -> metrics -> run directory."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from vistrain import distributed, tasks
from vistrain.analysis import Predictions
from vistrain.backbones import Backbone, get_backbone
from vistrain.check import digest_leaks
from vistrain.console import console
from vistrain.data import DataError, Dataset, Sample, Skipped, load_dataset
from vistrain.engine import EpochResult, fit
from vistrain.features import extract_features, file_digest
from vistrain.fine_tune import BACKBONE_WEIGHTS, fine_tune
from vistrain.heads import build_head
from vistrain.inspect_run import PREDICTIONS, inspect, write_predictions
from vistrain.metrics import HEADLINE, task_metrics, tune_thresholds
from vistrain.run_dir import CONFIG, WEIGHTS, RunError, new_run_dir, write_csv, write_json, write_skipped
from vistrain.transforms import Augmentation, View


@dataclass
class TrainOptions:
    """Everything a training run can be told; the defaults follow the course."""

    backbone: str = "efficientnet_lite0"
    task: str = "auto"
    head: str = "mlp"
    hidden: int = 256
    dropout: float = 0.2
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.001
    val_fraction: float = 0.2
    seed: int = 0
    label_depth: int | None = None  # class = folder this many levels down (default: the top-level folder)
    class_weight: str | None = None  # "balanced": loss weights against class imbalance
    sampler: str | None = None  # "balanced": draw batches so that classes come up equally often
    augment_views: int = 0  # augmented versions of each training image whose features are cached and trained on
    fine_tune: int = 0  # then unfreeze the backbone's last this many blocks and train them with the head
    fine_tune_epochs: int = 5
    fine_tune_lr: float | None = None  # the backbone's, while fine-tuning [default: learning_rate / 10]
    patience: int = 3  # fine-tuning stops after this many epochs without a lower validation loss


CHECKPOINT = "checkpoint.pt"  # present only while a run is unfinished


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    history: list[EpochResult]
    skipped: list[Skipped]


def package_versions() -> dict[str, str]:
    names = ["vistrain", "torch", "torchvision", "timm", "numpy", "pillow", "scikit-learn", "safetensors"]
    return {"python": platform.python_version(), **{name: version(name) for name in names}}


def _tensors(task: str, vectors: np.ndarray, samples: list[Sample],
             kept: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(vectors), tasks.target_tensor(task, [samples[i].target for i in kept])


def train(
    data: str | Path,
    out: str | Path | None = None,
    options: TrainOptions | None = None,
    cache_dir: Path | None = None,
    overwrite: bool = False,
    verbose: bool = True,
    image_root: Path | None = None,
    resume_from: dict | None = None,
) -> TrainResult:
    """Train a head on frozen backbone features of the images in `data` (a folder, or a label CSV whose paths
    are relative to `image_root`), then, with `options.fine_tune`, the backbone's last blocks with it (see
    `fine_tune.fine_tune`), and write a run directory. Until it is complete, the run directory holds a
    checkpoint (see `resume`)."""
    options = options or TrainOptions()
    context = distributed.setup()
    verbose = verbose and context.is_main
    say = console.print if verbose else (lambda *args, **kwargs: None)
    started = time.perf_counter()
    dataset = load_dataset(data, options.val_fraction, options.seed, options.label_depth, options.task, image_root)
    task = dataset.task
    backbone = get_backbone(options.backbone)
    if resume_from:
        run = Path(out)
    else:  # rank 0 creates it (and picks the timestamped name), the others learn where it is
        run = distributed.share(context, new_run_dir(out, overwrite) if context.is_main else None)
    job = {"data": str(Path(data).resolve()), "image_root": str(image_root.resolve()) if image_root else None,
           "options": asdict(options)}
    checkpoint = resume_from or {"job": job}
    if not resume_from and context.is_main:
        save_checkpoint(run, checkpoint)

    def on_checkpoint(stage: str, state: dict) -> None:  # stage: "training" (the head alone) or "fine_tune"
        checkpoint[stage] = state
        if context.is_main:
            save_checkpoint(run, checkpoint)

    say(f"data: {dataset.layout}")
    say(f"task: {task} ({dataset.task_reason})")
    say(("classes: " if task in tasks.SINGLE_LABEL else "outputs: ")
        + ", ".join(f"{i} = {name}" for i, name in enumerate(dataset.classes)))
    say(f"images: {len(dataset.train)} for training, {len(dataset.val)} for validation")
    _warn_about_imbalance(dataset, say)

    samples = dataset.train + dataset.val
    paths = [s.path for s in samples]
    share = extract_features(paths[context.rank::context.world_size], backbone, backbone.preprocess, cache_dir,
                             show_progress=verbose) if context.active else None
    distributed.barrier(context)  # every process's share is in the cache
    features = extract_features(paths, backbone, backbone.preprocess, cache_dir, show_progress=verbose)
    computed = share or features
    rate = computed.computed / computed.compute_seconds if computed.computed else None
    say(f"features: {computed.computed} computed" + (f" ({rate:.1f} img/s)" if rate else "")
        + (f" by rank 0 of {context.world_size} processes" if context.active
           else f", {len(features.kept) - features.computed} from the cache"))
    n_train = len(dataset.train)
    _warn_about_leaks(features.digests, samples, n_train, say)
    train_rows = [k for k, i in enumerate(features.kept) if i < n_train]
    val_rows = [k for k, i in enumerate(features.kept) if i >= n_train]
    # kept is in input order, training images first: slices are views, so a memory-mapped matrix stays on disk
    train_xy = _tensors(task, features.vectors[: len(train_rows)], samples, [features.kept[k] for k in train_rows])
    val_xy = _tensors(task, features.vectors[len(train_rows) :], samples, [features.kept[k] for k in val_rows])
    _check_usable(task, train_xy[1], val_xy[1], dataset.classes)
    train_images = ([samples[features.kept[k]].path for k in train_rows], train_xy[1])  # for fine-tuning
    if options.augment_views:
        train_xy = _with_augmented_views(train_xy, train_images[0], options.augment_views, backbone, cache_dir,
                                         verbose)
        say(f"training on {len(train_xy[1])} feature vectors: each training image and {options.augment_views} "
            f"augmented version(s) of it ({Augmentation().to_dict()})")

    torch.manual_seed(options.seed)  # initial weights and dropout masks
    n_outputs = len(dataset.classes)
    head = build_head(options.head, backbone.feature_dim, tasks.output_units(task, n_outputs),
                      options.hidden, options.dropout, rescale=task == "regression")
    if task == "regression":
        head[-1].fit(train_xy[1])
    weights = tasks.balanced_weights(task, train_xy[1], n_outputs) if options.class_weight == "balanced" else None
    sample_weights = tasks.balanced_sample_weights(task, train_xy[1]) if options.sampler == "balanced" else None
    score_name = tasks.SCORE_NAMES[task]
    history, best_epoch = fit(
        head, train_xy, val_xy, task, options.epochs, options.batch_size, options.learning_rate, options.seed,
        weights, sample_weights,
        on_epoch=lambda r: say(
            f"epoch {r.epoch:>3}/{options.epochs}  loss {r.train_loss:.4f}  {score_name} {r.train_score:.4f}  "
            f"val_loss {r.val_loss:.4f}  val_{score_name} {r.val_score:.4f}"
        ),
        resume_from=checkpoint.get("training"), on_checkpoint=lambda state: on_checkpoint("training", state),
        context=context,
    )
    stages = ["frozen"] * len(history)
    val_paths = [samples[features.kept[k]].path for k in val_rows]
    if options.fine_tune:
        extractor = backbone.build_feature_extractor()
        backbone_lr = options.fine_tune_lr or options.learning_rate / 10
        say(f"fine-tuning the last {options.fine_tune} blocks (learning rate {backbone_lr:g}; "
            f"head {options.learning_rate:g}) on the images, augmented")
        tuned = fine_tune(
            extractor, head, train_images, (val_paths, val_xy[1]),
            task, backbone.preprocess, options.fine_tune, options.fine_tune_epochs, options.batch_size,
            options.learning_rate, backbone_lr, options.patience, options.seed, weights, sample_weights,
            on_epoch=lambda r: say(
                f"fine-tune {r.epoch:>3}/{options.fine_tune_epochs}  loss {r.train_loss:.4f}  {score_name} "
                f"{r.train_score:.4f}  val_loss {r.val_loss:.4f}  val_{score_name} {r.val_score:.4f}"
            ),
            resume_from=checkpoint.get("fine_tune"), on_checkpoint=lambda state: on_checkpoint("fine_tune", state),
            context=context,
        )
        history += [replace(r, epoch=options.epochs + r.epoch) for r in tuned.history]
        stages += ["fine-tune"] * len(tuned.history)
        best_epoch = options.epochs + tuned.best_epoch
        val_outputs = tuned.val_outputs.numpy()
        if tuned.images_per_second:
            say(f"fine-tuning: {tuned.images_per_second:.1f} training images/s; best epoch {best_epoch}")
    else:
        head.eval()
        with torch.no_grad():
            val_outputs = tasks.outputs(task, head(val_xy[0])).numpy()
    val_targets = val_xy[1].numpy()
    thresholds = tune_thresholds(val_targets, val_outputs) if task == "multilabel" else None
    metrics = task_metrics(task, val_targets, val_outputs, dataset.classes, thresholds)
    best = history[best_epoch - 1]
    skipped = dataset.skipped + features.skipped
    metrics.update(
        task=task, best_epoch=best_epoch, val_loss=best.val_loss, n_train=len(train_rows), n_skipped=len(skipped),
        timing={"wall_seconds": round(time.perf_counter() - started, 2), "features_computed": computed.computed,
                "features_per_second": rate, "processes": context.world_size,
                **({"fine_tune_images_per_second": tuned.images_per_second} if options.fine_tune else {})},
    )
    if not context.is_main:  # rank 0 writes the run directory
        return TrainResult(run, metrics, history, skipped)

    save_weights(run / WEIGHTS, head)
    if options.fine_tune:
        save_weights(run / BACKBONE_WEIGHTS, extractor)
    write_json(run / "metrics.json", metrics)
    rows = [{**r.as_row(score_name), "stage": stage} for r, stage in zip(history, stages)]
    write_csv(run / "history.csv", list(rows[0]), [list(row.values()) for row in rows])
    write_predictions(run / PREDICTIONS, Predictions(val_paths, val_targets, val_outputs, dataset.classes, task,
                                                     thresholds))
    write_skipped(run / "skipped.csv", skipped)
    write_json(run / CONFIG, {  # last: a run directory with a config is complete
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backbone": {"name": backbone.name, "weights": backbone.weights, "feature_dim": backbone.feature_dim},
        "preprocess": backbone.preprocess.to_dict(),
        "classes": dataset.classes,
        "task": task,
        **({"thresholds": thresholds} if thresholds else {}),
        "head": {"kind": options.head, "hidden": options.hidden, "dropout": options.dropout},
        "training": {**asdict(options), "task": task, "optimizer": "adam", "best_epoch": best_epoch,
                     "best_epoch_rule": "lowest validation loss"},
        **({"fine_tune": {"blocks": options.fine_tune, "unfrozen": tuned.unfrozen, "backbone_lr": backbone_lr,
                          "head_lr": options.learning_rate, "epochs": options.fine_tune_epochs,
                          "epochs_run": len(tuned.history), "patience": options.patience,
                          "augmentation": Augmentation().to_dict(), "weights_file": BACKBONE_WEIGHTS,
                          "sha256": file_digest(run / BACKBONE_WEIGHTS)}} if options.fine_tune else {}),
        "data": {"source": str(Path(data).resolve()), "layout": dataset.layout,
                 "n_train": len(train_rows), "n_val": len(val_rows)},
        "versions": package_versions(),
    })
    (run / CHECKPOINT).unlink()
    report = inspect(run, show_progress=False).report
    headline = HEADLINE[task]
    say(f"best epoch {best_epoch}: validation {headline.replace('_', ' ')} {metrics[headline]:.4f} on "
        f"{len(val_rows)} images; run saved in {run}; report: {report}")
    return TrainResult(run, metrics, history, skipped)


def resume(run: str | Path, cache_dir: Path | None = None, verbose: bool = True) -> TrainResult:
    """Continue a `train` that was interrupted (Ctrl-C, kill -9, power cut) from RUN's last checkpoint: the
    features come from the cache, the head from the last finished epoch; the result is the same as an
    uninterrupted run's."""
    run = Path(run)
    if (run / CONFIG).is_file():
        raise RunError(f"{run} is complete; there is nothing to resume")
    if not (run / CHECKPOINT).is_file():
        raise RunError(f"{run} has no {CHECKPOINT}: it is not an interrupted vistrain run")
    checkpoint = torch.load(run / CHECKPOINT, weights_only=True)
    job = checkpoint["job"]
    epochs_done = sum(len(checkpoint.get(stage, {}).get("history", [])) for stage in ("training", "fine_tune"))
    (console.print if verbose else (lambda *a: None))(f"resuming {run} after epoch {epochs_done}")
    return train(job["data"], run, TrainOptions(**job["options"]), cache_dir, verbose=verbose,
                 image_root=Path(job["image_root"]) if job["image_root"] else None, resume_from=checkpoint)


def save_checkpoint(run: Path, state: dict) -> None:
    """RUN/checkpoint.pt, written atomically: what `resume` needs (tensors, numbers, strings and lists only, so
    it loads with weights_only=True)."""
    handle, temporary = tempfile.mkstemp(dir=run, prefix=f".{CHECKPOINT}.")
    os.close(handle)
    torch.save(state, temporary)
    os.replace(temporary, run / CHECKPOINT)


def save_weights(path: Path, module: torch.nn.Module) -> None:
    """Write a module's weights (its whole state dict) as safetensors, atomically."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, temporary)
    os.replace(temporary, path)


def _warn_about_leaks(digests: dict[int, str], samples: list[Sample], n_train: int, say) -> None:
    """The cheap part of `vistrain check`: the same file bytes in training and validation inflate accuracy."""
    train = {d: samples[i].path for i, d in digests.items() if i < n_train}
    val = {d: samples[i].path for i, d in digests.items() if i >= n_train}
    leaks = digest_leaks(train, val)
    if leaks:
        say(f"[yellow]warning:[/] {len(leaks)} image(s) are in both training and validation (exact duplicates), "
            "which inflates validation accuracy; `vistrain check` lists them and near duplicates:")
        for train_path, val_path in leaks[:10]:
            say(f"  {train_path} = {val_path}")


def _with_augmented_views(train_xy: tuple[torch.Tensor, torch.Tensor], paths: list[Path], views: int,
                          backbone: Backbone, cache_dir: Path | None,
                          verbose: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The training features and targets plus those of `views` augmented versions of every training image
    (cached like any features: the same file and view number always give the same augmentation)."""
    vectors, targets = [train_xy[0]], [train_xy[1]]
    for index in range(1, views + 1):
        view = View("augmented", index, Augmentation())
        augmented = extract_features(paths, backbone, backbone.preprocess, cache_dir, show_progress=verbose, view=view)
        vectors.append(torch.from_numpy(augmented.vectors))
        targets.append(train_xy[1][augmented.kept])
    return torch.cat(vectors), torch.cat(targets)


def _warn_about_imbalance(dataset: Dataset, say) -> None:
    """Single-label data where one class holds over 80% of the training images: accuracy alone misleads."""
    if dataset.task not in tasks.SINGLE_LABEL or not dataset.train:
        return
    counts = np.bincount([s.target for s in dataset.train], minlength=len(dataset.classes))
    top = int(counts.argmax())
    if counts[top] > 0.8 * counts.sum():
        say(f"[yellow]warning:[/] class {dataset.classes[top]} holds {counts[top] / counts.sum():.0%} of the training "
            "images; accuracy will flatter the model (look at per-class recall), and consider "
            "--class-weight balanced or --sampler balanced")


def _check_usable(task: str, train_targets: torch.Tensor, val_targets: torch.Tensor, classes: list[str]) -> None:
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
        raise DataError("no readable validation images; add images or raise --val-fraction")
