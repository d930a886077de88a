"""The `vistrain` command line (built with click; tables and progress with rich)."""

from __future__ import annotations

import csv
import json
import sys
from functools import wraps
from pathlib import Path

import click
import numpy as np
from rich.table import Table

from vistrain.backbones import BackboneUnavailable
from vistrain.console import console, results
from vistrain.data import TASKS, DataError, load_labelled
from vistrain.organise import DEFAULT_PATTERN, LINK_MODES
from vistrain.run_dir import RunError

USER_ERRORS = (DataError, RunError, BackboneUnavailable, ValueError)
HEADS = ("mlp", "linear")  # heads.build_head's kinds, named here so that `vistrain --help` need not import torch


def friendly_errors(command):
    """Show expected mistakes (bad folders, bad options) as one clear line instead of a traceback."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            raise click.ClickException(str(error)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="vistrain")
def main() -> None:
    """Train, evaluate and use image classifiers by transfer learning, on a CPU."""


def training_options(command):
    """Options shared by `train` and `demo`."""
    options = [
        click.option("--out", type=click.Path(path_type=Path), help="Run directory [default: runs/<timestamp>]."),
        click.option("--overwrite", is_flag=True, help="Allow an --out directory that already holds files."),
        click.option("--backbone", default="efficientnet_lite0",
                     help="A name from `vistrain backbones`, or timm:NAME / torchvision:NAME, optionally @FILE "
                          "(a weights file). Frozen, unless --fine-tune."),
        click.option("--epochs", default=10, type=click.IntRange(1)),
        click.option("--batch-size", default=64, type=click.IntRange(1)),
        click.option("--lr", "learning_rate", default=0.001, type=click.FloatRange(0, min_open=True),
                     help="Adam learning rate."),
        click.option("--head", default="mlp", type=click.Choice(HEADS),
                     help="mlp: dense -> ReLU -> dropout -> output; linear: dropout -> output."),
        click.option("--hidden", default=256, type=click.IntRange(1), help="Units of the mlp head's dense layer."),
        click.option("--dropout", default=0.2, type=click.FloatRange(0, 1, max_open=True)),
        click.option("--task", default="auto", type=click.Choice(("auto", *TASKS)),
                     help="auto: binary for 2 classes, multiclass for more; from a CSV, multilabel when labels "
                          "are listed as a;b, regression for numbers (more than 2 distinct values)."),
        click.option("--class-weight", type=click.Choice(("balanced",)),
                     help="Weigh the loss against class imbalance (n / (classes x count) per class)."),
        click.option("--sampler", type=click.Choice(("balanced",)),
                     help="Draw training batches so that every class comes up equally often."),
        click.option("--augment-views", default=0, type=click.IntRange(0),
                     help="Also train on K augmented versions of each training image (rotation ±20°, shift and zoom "
                          "±10%, flip), their features cached too; costs K extra feature passes the first time."),
        click.option("--val-fraction", default=0.2, type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help="Share of each class held out for validation when DATA has no val/ folder."),
        click.option("--fine-tune", default=0, type=click.IntRange(0), metavar="N",
                     help="After the head has trained on frozen features, unfreeze the backbone's last N blocks "
                          "(EfficientNet: stages of model.blocks, plus the conv_head and bn2 after them) and train "
                          "them with the head on the images, augmented (rotation, shift, zoom, flip); frozen "
                          "BatchNorm layers keep their statistics. Slow on a CPU: every epoch runs the backbone on "
                          "every image again (measured on 2 shared cores, --fine-tune 2: about 7 training images/s, "
                          "forward and backward, against 11 images/s for frozen features). Uses a CUDA GPU when "
                          "there is one. 0: the backbone stays frozen."),
        click.option("--fine-tune-epochs", default=5, type=click.IntRange(1),
                     help="Most epochs of fine-tuning (see --patience)."),
        click.option("--fine-tune-lr", type=click.FloatRange(0, min_open=True),
                     help="The backbone's Adam learning rate while fine-tuning (the head keeps --lr) "
                          "[default: --lr / 10]."),
        click.option("--patience", default=3, type=click.IntRange(1),
                     help="Stop fine-tuning after this many epochs without a lower validation loss; the backbone "
                          "and head keep the weights of the epoch with the lowest."),
        click.option("--seed", default=0, type=int),
        click.option("--label-depth", type=click.IntRange(1),
                     help="Nested trees: the folder level that names the class [default: the top-level folder]."),
        click.option("--cache-dir", type=click.Path(path_type=Path),
                     help="Feature cache [default: $VISTRAIN_CACHE or ~/.cache/vistrain]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def label_options(command):
    """DATA or --labels, for `train`, `evaluate` and `inspect`."""
    command = click.option("--image-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
                           help="Folder the --labels paths are relative to [default: the CSV's folder].")(command)
    return click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="CSV of path,label rows (path,\"a;b\" for multi-label; path,value[,value...] for "
                             "regression; optional header and split column), instead of DATA.")(command)


def data_source(data: Path | None, labels: Path | None, required: bool = True) -> Path | None:
    """DATA or --labels, not both."""
    if data is not None and labels is not None:
        raise click.UsageError("give DATA or --labels, not both (--image-root sets where --labels paths start)")
    if required and data is None and labels is None:
        raise click.UsageError("give DATA (a folder of class folders) or --labels FILE.csv")
    return data if data is not None else labels


def _train(data: Path, out, overwrite, cache_dir, image_root=None, **settings) -> None:
    from vistrain.train import TrainOptions, train

    show_result(train(data, out, TrainOptions(**settings), cache_dir=cache_dir, overwrite=overwrite,
                      image_root=image_root))


def show_result(result) -> None:
    """A finished training's metrics, then the files it skipped (under torchrun: by rank 0 only)."""
    from vistrain.distributed import setup

    if setup().is_main:
        print_metrics(result.metrics)
        report_skipped(result.skipped)


@main.command()
@click.argument("data", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@label_options
@click.option("--resume", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Continue the interrupted run in this directory (its own data and options; others are ignored).")
@training_options
@friendly_errors
def train(data: Path | None, labels: Path | None, resume: Path | None, **settings) -> None:
    """Train a model on the labelled images in DATA, or on the list given by --labels.

    DATA holds train/<class>/ and val/<class>/ (or validation/) folders, or just <class>/ folders, split into
    training and validation by --val-fraction. Class ids follow the sorted folder names. Multi-label and
    regression targets come from a --labels CSV (regression also from folders named by numbers).
    """
    if resume is not None:
        from vistrain.train import resume as resume_run

        show_result(resume_run(resume, settings["cache_dir"]))
        return
    _train(data_source(data, labels), **settings)


@main.command()
@training_options
@friendly_errors
def demo(**settings) -> None:
    """Train on the built-in demo: 2,624 solar-cell photos (PyPI elpv-dataset).

    --task binary (the default for auto): defective or functional; multiclass: the experts' four defect
    probability levels; multilabel: the cell type (mono/poly) plus defective; regression: the defect probability.
    """
    from vistrain.demo import elpv_csv
    from vistrain.features import default_cache_dir

    settings["task"] = "binary" if settings["task"] == "auto" else settings["task"]
    labels = elpv_csv((settings["cache_dir"] or default_cache_dir()) / "datasets", settings["task"])
    console.print(f"demo data: {labels}")
    _train(labels, **settings)


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@label_options
@click.option("--format", "output_format", default="table", type=click.Choice(("table", "json")))
@click.option("--tta", is_flag=True, help="Test-time augmentation: average each image's and its mirror's outputs.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
@friendly_errors
def evaluate(run: Path, data: Path | None, labels: Path | None, image_root: Path | None, output_format: str,
             tta: bool, cache_dir: Path | None) -> None:
    """Score the model in RUN on labelled images: DATA (its val/ folder if it has one, else all) or --labels."""
    from vistrain.metrics import task_metrics
    from vistrain.predict import Predictor

    predictor = Predictor.from_run(run)
    samples, skipped = load_labelled(data_source(data, labels), predictor.classes, predictor.task, image_root)
    target_of = {s.path: s.target for s in samples}
    result = predictor.predict([s.path for s in samples], cache_dir, show_progress=output_format == "table", tta=tta)
    targets = np.array([target_of[p] for p in result.paths])
    metrics = task_metrics(predictor.task, targets, result.outputs, predictor.classes, predictor.thresholds)
    metrics["task"] = predictor.task
    metrics["skipped"] = [{"file": str(s.path), "reason": s.reason} for s in skipped + result.skipped]
    if output_format == "json":
        click.echo(json.dumps(metrics, indent=2))
    else:
        print_metrics(metrics)
        report_skipped(skipped + result.skipped)


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=3, type=click.IntRange(1), help="Classes shown per image.")
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="Mark predictions whose probability is below this as uncertain; multi-label models: one "
                   "threshold for every label instead of the ones tuned on validation.")
@click.option("--format", "output_format", default="table", type=click.Choice(("table", "csv", "json")))
@click.option("--tta", is_flag=True, help="Test-time augmentation: average each image's and its mirror's outputs.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
@friendly_errors
def predict(run: Path, paths: tuple[Path, ...], top_k: int, threshold: float | None, output_format: str,
            tta: bool, cache_dir: Path | None) -> None:
    """Predict image files, or every file in folders, with the model in RUN: the class, the labels over their
    thresholds (multi-label) or the values (regression)."""
    from vistrain.predict import Predictor, expand_paths

    predictor = Predictor.from_run(run)
    files = expand_paths(list(paths))
    result = predictor.predict(files, cache_dir, show_progress=output_format == "table", tta=tta)
    k = min(top_k, len(predictor.classes))
    rows = [{"file": str(path), **row, "error": ""}
            for path, row in zip(result.paths, predictor.describe(result.outputs, threshold, k))]
    rows += [{"file": str(s.path), "class": "", "probability": None, "uncertain": False, "top": [],
              "error": s.reason} for s in result.skipped]
    order_of = {str(p): i for i, p in enumerate(files)}
    rows.sort(key=lambda row: order_of[row["file"]])
    print_predictions(rows, output_format, k)


@main.command("inspect")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@label_options
@click.option("--top", default=10, type=click.IntRange(1), help="Images per list.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
@friendly_errors
def inspect_command(run: Path, data: Path | None, labels: Path | None, image_root: Path | None, top: int,
                    cache_dir: Path | None) -> None:
    """Per class: the most confident, least confident and confidently wrong images, and possible label errors;
    per label for multi-label models; the largest errors for regression.

    DATA (or --labels) defaults to the run's validation images (their saved predictions are reused). Writes
    RUN/inspect_*.csv and the HTML report RUN/report.html.
    """
    from vistrain.analysis import LIST_TITLES
    from vistrain.inspect_run import inspect

    result = inspect(run, data_source(data, labels, required=False), top, cache_dir, image_root=image_root)
    for lists in result.lists.values():
        for list_name, by_class in lists.items():
            for class_name, entries in by_class.items():
                print_entries(f"{LIST_TITLES[list_name]}: predicted {class_name}", entries, top)
    if result.label_errors:
        regression = result.label_errors[0].error is not None
        print_entries(LIST_TITLES["largest_errors" if regression else "label_errors"], result.label_errors, top)
    console.print(("reused the saved predictions; " if result.reused_predictions else "")
                  + f"CSV files in {run}/inspect_*.csv; report: {result.report}")


@main.command("augment-preview")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="augment-preview.png")
@click.option("--images", default=4, type=click.IntRange(1), help="Training images shown (rows).")
@click.option("--views", default=5, type=click.IntRange(1), help="Augmented versions of each (columns).")
@click.option("--rotation", default=20.0, type=click.FloatRange(0, 180), help="Degrees, either way.")
@click.option("--shift", default=0.1, type=click.FloatRange(0, 1), help="Share of width/height, either way.")
@click.option("--zoom", default=0.1, type=click.FloatRange(0, 1, max_open=True), help="Scale 1 ± zoom.")
@click.option("--flip/--no-flip", default=True, help="Random horizontal flips.")
@click.option("--backbone", default="efficientnet_lite0", help="Whose input size and resizing to use.")
@click.option("--seed", default=0, type=int)
@friendly_errors
def augment_preview(data: Path, out: Path, images: int, views: int, rotation: float, shift: float, zoom: float,
                    flip: bool, backbone: str, seed: int) -> None:
    """Save a grid: a few training images of DATA, each beside augmented versions of it."""
    from vistrain.augment_preview import preview_grid, sample_training_images
    from vistrain.transforms import Augmentation
    from vistrain.backbones import get_backbone
    from vistrain.data import load_dataset
    from vistrain.images import UnreadableImage, load_rgb
    from vistrain.run_dir import write_atomic

    dataset = load_dataset(data, seed=seed)
    pictures = []
    for path in sample_training_images([s.path for s in dataset.train], images * 3, seed):
        try:
            pictures.append(load_rgb(path))
        except UnreadableImage as error:
            console.print(f"[yellow]skipped[/] {path}: {error}")
        if len(pictures) == images:
            break
    if not pictures:
        raise DataError(f"no readable training images in {data}")
    augmentation = Augmentation(rotation, shift, zoom, flip)
    write_atomic(out, preview_grid(pictures, get_backbone(backbone).preprocess, augmentation, views, seed))
    console.print(f"augmentation {augmentation.to_dict()} -> {out}")


@main.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--val-fraction", default=0.2, type=click.FloatRange(0, 1, max_open=True))
@click.option("--test-fraction", default=0.0, type=click.FloatRange(0, 1, max_open=True),
              help="Also write DEST/test/<class>/.")
@click.option("--per-class", type=click.IntRange(1), help="Take a random N images per class (the course uses 250).")
@click.option("--pattern", default=DEFAULT_PATTERN,
              help="Flat folders: regex with a named group `label`, matched at the start of each file name.")
@click.option("--label-depth", type=click.IntRange(1),
              help="Class folder trees: which folder level names the class [default: the leaf folder].")
@click.option("--image-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="CSV lists: folder the paths are relative to [default: the CSV's folder].")
@click.option("--link", "mode", default="hardlink", type=click.Choice(LINK_MODES),
              help="How files get into DEST; originals are never moved or deleted.")
@click.option("--copy", "mode", flag_value="copy", help="Same as --link copy.")
@click.option("--symlink", "mode", flag_value="symlink", help="Same as --link symlink.")
@click.option("--force", is_flag=True, help="Write into a DEST that is not empty.")
@click.option("--seed", default=0, type=int)
@friendly_errors
def split(source: Path, dest: Path, val_fraction: float, test_fraction: float, per_class: int | None, pattern: str,
          label_depth: int | None, image_root: Path | None, mode: str, force: bool, seed: int) -> None:
    """Organise SOURCE (a flat folder of files named like cat.1.jpg, a tree of class folders, or a CSV of
    path,label rows) into DEST/train/<class>/ and DEST/val/<class>/, stratified by class and seeded."""
    from vistrain.organise import assign_splits, label_source, write_splits

    labelled = label_source(source, pattern, label_depth, image_root)
    if len(labelled.files) < 2:
        raise DataError(f"{source}: found {len(labelled.files)} class(es) ({labelled.source}); need at least two")
    splits = assign_splits(labelled.files, val_fraction, test_fraction, seed, per_class)
    write_splits(splits, dest, mode, force)
    console.print(f"{labelled.source} -> {dest} ({mode})")
    table = Table()
    table.add_column("class")
    for name in splits:
        table.add_column(name, justify="right")
    for label in sorted(labelled.files):
        table.add_row(label, *(str(len(splits[name].get(label, []))) for name in splits))
    table.add_row("[b]total[/]", *(str(sum(map(len, splits[name].values()))) for name in splits))
    results.print(table)
    report_skipped(labelled.skipped)


@main.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--threshold", default=4, type=click.IntRange(0, 64),
              help="Near duplicates: at most this many of the 64 perceptual-hash bits differ.")
@click.option("--min-size", default=32, type=click.IntRange(1), help="Flag images smaller than this on a side.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="vistrain-check",
              help="Folder for the CSV files.")
@friendly_errors
def check(data: Path, threshold: int, min_size: int, out: Path) -> None:
    """Check DATA before training: counts, unreadable files, sizes, duplicates, train/val leakage, label conflicts."""
    from rich.progress import Progress

    from vistrain.check import check_dataset, imbalance, size_summary
    from vistrain.run_dir import write_csv

    total = sum(1 for p in data.rglob("*") if p.is_file())
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("checking", total=total)
        result = check_dataset(data, threshold, on_file=lambda: progress.advance(task))
    table = Table(title="images per class")
    table.add_column("class")
    for split in result.counts:
        table.add_column(split, justify="right")
    for label in sorted({label for counts in result.counts.values() for label in counts}):
        table.add_row(label, *(str(result.counts[s].get(label, 0)) for s in result.counts))
    table.add_row("[b]imbalance (largest/smallest)[/]", *(f"{imbalance(c):.2f}" for c in result.counts.values()))
    results.print(table)
    sizes = size_summary(result.records, min_size)
    if result.records:
        results.print(f"sizes (min / median / max): width {sizes['width']}, height {sizes['height']}; "
                      f"{len(sizes['tiny'])} smaller than {min_size} px on a side")
    results.print(f"unreadable files: {len(result.unreadable)}")
    for kind in ("exact", "near"):
        pairs = [p for p in result.pairs if p.kind == kind]
        results.print(f"{kind} duplicates: {len(pairs)} pair(s), {sum(p.a.split != p.b.split for p in pairs)} across "
                      f"splits (leakage), {sum(p.a.label != p.b.label for p in pairs)} with conflicting labels")
        for pair in pairs[:20]:
            results.print(f"  {pair.a.path}  ~  {pair.b.path}  (distance {pair.distance}; {pair.where})")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "duplicates.csv", ["kind", "distance", "where", "file_a", "split_a", "class_a", "file_b",
                                       "split_b", "class_b"],
              [[p.kind, p.distance, p.where, p.a.path, p.a.split, p.a.label, p.b.path, p.b.split, p.b.label]
               for p in result.pairs])
    write_csv(out / "unreadable.csv", ["file", "reason"], [[s.path, s.reason] for s in result.unreadable])
    write_csv(out / "images.csv", ["file", "split", "class", "width", "height", "sha256", "phash"],
              [[r.path, r.split, r.label, r.width, r.height, r.digest, f"{r.phash:016x}"] for r in result.records])
    console.print(f"CSV files in {out}/: images.csv, duplicates.csv, unreadable.csv")


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "output_format", default="onnx", type=click.Choice(("onnx", "torchscript")))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write [default: RUN/model.onnx or RUN/model.pt].")
@friendly_errors
def export(run: Path, output_format: str, out: Path | None) -> None:
    """Write the model in RUN as one file: uint8 RGB images (N x size x size x 3, resized and centre-cropped) in,
    class probabilities (or values) out, with classes, task and preprocessing as metadata."""
    from vistrain.export import export as export_model

    path = export_model(run, output_format, out)
    console.print(f"{output_format} model -> {path} ({path.stat().st_size / 1e6:.1f} MB)")


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, type=click.IntRange(0, 65535))
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="Mark predictions whose probability is below this as uncertain; multi-label models: one "
                   "threshold for every label instead of the ones tuned on validation.")
@click.option("--max-bytes", default=20_000_000, type=click.IntRange(1), help="Largest image file accepted.")
@click.option("--max-batch", default=16, type=click.IntRange(1), help="Most images in one forward pass.")
@click.option("--max-wait-ms", default=5.0, type=click.FloatRange(0),
              help="How long the first image of a batch waits for others.")
@friendly_errors
def serve(run: Path, host: str, port: int, threshold: float | None, max_bytes: int, max_batch: int,
          max_wait_ms: float) -> None:
    """Serve the model in RUN over HTTP: POST /predict (multipart field `files`), GET /health, and a web page at /."""
    import uvicorn

    from vistrain.serve import create_app

    app = create_app(run, threshold, max_bytes, max_batch, max_wait_ms / 1000)
    uvicorn.run(app, host=host, port=port)


@main.command("backbones")
def backbones_command() -> None:
    """List the backbones: size, input size, ImageNet accuracy, licence, and how to install the missing ones."""
    from rich.markup import escape

    from vistrain.backbones import NAMING_HELP, list_backbones

    table = Table(title="backbones", title_justify="left", show_edge=False)
    table.add_column("name", no_wrap=True)
    for column in ("params (M)", "input", "top-1"):
        table.add_column(column, justify="right")
    table.add_column("licence")
    table.add_column("installed")
    for backbone in list_backbones():
        params, top1 = backbone.params_millions, backbone.imagenet_top1
        table.add_row(backbone.name, "?" if params is None else f"{params:.2f}", str(backbone.preprocess.input_size),
                      "?" if top1 is None else f"{top1:.1f}%", backbone.license, "yes" if backbone.installed else "no")
    results.print(table)
    results.print("top-1: accuracy on ImageNet-1k validation, as published for these weights")
    for backbone in list_backbones():
        if not backbone.installed:
            results.print(f"to install {backbone.name}: {escape(backbone.install)}")
    results.print(NAMING_HELP)


def print_entries(title: str, entries: list, top: int) -> None:
    """A compact table of ranked images; says so when the list is shorter than asked."""
    note = "" if len(entries) >= top else f"  [dim](only {len(entries)} of {top})[/]"
    table = Table(title=f"{title}{note}", title_justify="left", show_edge=False)
    last = "error" if entries and entries[0].error is not None else "probability"
    for column, justify in (("#", "right"), ("file", "left"), ("true", "left"), ("predicted", "left"), (last, "right")):
        table.add_column(column, justify=justify, overflow="fold")
    for rank, e in enumerate(entries, 1):
        table.add_row(str(rank), e.file.name, e.true, e.predicted,
                      f"{e.error:.4g}" if last == "error" else f"{e.probability:.4f}")
    results.print(table)


def print_metrics(metrics: dict) -> None:
    """The task's metrics as terminal tables."""
    if "per_target" in metrics:
        r2 = "n/a" if metrics["r2"] is None else f"{metrics['r2']:.4f}"
        _print_table(f"MAE {metrics['mae']:.4g} · RMSE {metrics['rmse']:.4g} · R² {r2} "
                     f"on {metrics['n_images']} images",
                     ("target", "MAE", "RMSE", "R²"),
                     [(name, f"{m['mae']:.4g}", f"{m['rmse']:.4g}", "n/a" if m["r2"] is None else f"{m['r2']:.4f}")
                      for name, m in metrics["per_target"].items()])
        return
    if "per_label" in metrics:
        mean_ap = metrics["mean_average_precision"]
        _print_table(f"micro F1 {metrics['micro_f1']:.4f} · macro F1 {metrics['macro_f1']:.4f} · mAP "
                     f"{'n/a' if mean_ap is None else f'{mean_ap:.4f}'} · exact match {metrics['exact_match']:.4f} "
                     f"on {metrics['n_images']} images",
                     ("label", "threshold", "precision", "recall", "F1", "AP", "images"),
                     [(name, f"{m['threshold']:.2f}", f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}",
                       "n/a" if m["average_precision"] is None else f"{m['average_precision']:.4f}", str(m["support"]))
                      for name, m in metrics["per_label"].items()])
        return
    extra = "".join(f" · {'ROC AUC' if key == 'roc_auc' else key.replace('_', ' ')} {value:.4f}"
                    for key, value in metrics.items()
                    if key == "roc_auc" or (key.startswith("top_") and key.endswith("_accuracy")))
    _print_table(f"accuracy {metrics['accuracy']:.4f} on {metrics['n_images']} images  "
                 f"(macro F1 {metrics['macro_f1']:.4f}{extra})",
                 ("class", "precision", "recall", "F1", "images"),
                 [(name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
                  for name, m in metrics["per_class"].items()])
    names = list(metrics["per_class"])
    matrix = Table(title="confusion matrix")
    matrix.add_column("true ↓  predicted →")
    for name in names:
        matrix.add_column(name, justify="right")
    for name, row in zip(names, metrics["confusion_matrix"]):
        matrix.add_row(name, *map(str, row))
    results.print(matrix)


def _print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    results.print(table)


def print_predictions(rows: list[dict], output_format: str, k: int) -> None:
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["file", "class", "probability", "uncertain", "top", "error"])
        for row in rows:
            top = ";".join(f"{name}:{p:.4f}" for name, p in row["top"])
            probability = "" if row["probability"] is None else f"{row['probability']:.6f}"
            writer.writerow([row["file"], row["class"], probability, row["uncertain"], top, row["error"]])
        return
    table = Table()
    table.add_column("file", overflow="fold")
    table.add_column("class")
    table.add_column("probability", justify="right")
    table.add_column(f"top {k}")
    for row in rows:
        if row["error"]:
            table.add_row(row["file"], "[red]error[/]", "", row["error"])
            continue
        label = f"{row['class']} [yellow](uncertain)[/]" if row["uncertain"] else row["class"]
        top = ", ".join(f"{name} {p:.3f}" for name, p in row["top"])
        probability = "" if row["probability"] is None else f"{row['probability']:.4f}"
        table.add_row(row["file"], label, probability, top)
    results.print(table)


def report_skipped(skipped: list) -> None:
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} file(s):[/]")
        for item in skipped:
            console.print(f"  {item.path}: {item.reason}")
