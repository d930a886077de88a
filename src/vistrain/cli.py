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
from vistrain.data import DataError, load_labelled_folder
from vistrain.heads import HEADS
from vistrain.organise import DEFAULT_PATTERN, LINK_MODES
from vistrain.run_dir import RunError
from vistrain.tasks import TASKS

USER_ERRORS = (DataError, RunError, BackboneUnavailable, ValueError)


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
        click.option("--epochs", default=10, type=click.IntRange(1)),
        click.option("--batch-size", default=64, type=click.IntRange(1)),
        click.option("--lr", "learning_rate", default=0.001, type=click.FloatRange(0, min_open=True),
                     help="Adam learning rate."),
        click.option("--head", default="mlp", type=click.Choice(HEADS),
                     help="mlp: dense -> ReLU -> dropout -> output; linear: dropout -> output."),
        click.option("--hidden", default=256, type=click.IntRange(1), help="Units of the mlp head's dense layer."),
        click.option("--dropout", default=0.2, type=click.FloatRange(0, 1, max_open=True)),
        click.option("--task", default="auto", type=click.Choice(("auto", *TASKS)),
                     help="auto: binary for 2 classes, multiclass for more."),
        click.option("--val-fraction", default=0.2, type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help="Share of each class held out for validation when DATA has no val/ folder."),
        click.option("--seed", default=0, type=int),
        click.option("--label-depth", type=click.IntRange(1),
                     help="Nested trees: the folder level that names the class [default: the top-level folder]."),
        click.option("--cache-dir", type=click.Path(path_type=Path),
                     help="Feature cache [default: $VISTRAIN_CACHE or ~/.cache/vistrain]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _train(data: Path, out, overwrite, cache_dir, **settings) -> dict:
    from vistrain.train import TrainOptions, train

    result = train(data, out, TrainOptions(**settings), cache_dir=cache_dir, overwrite=overwrite)
    print_metrics(result.metrics)
    return result.metrics


@main.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@training_options
@friendly_errors
def train(data: Path, **settings) -> None:
    """Train a classifier on the labelled images in DATA.

    DATA holds train/<class>/ and val/<class>/ (or validation/) folders, or just <class>/ folders, split into
    training and validation by --val-fraction. Class ids follow the sorted folder names.
    """
    _train(data, **settings)


@main.command()
@training_options
@friendly_errors
def demo(**settings) -> None:
    """Train on the built-in demo: 2,624 solar-cell photos, functional or defective (PyPI elpv-dataset)."""
    from vistrain.demo import prepare_elpv
    from vistrain.features import default_cache_dir

    data = prepare_elpv((settings["cache_dir"] or default_cache_dir()) / "datasets" / "elpv")
    console.print(f"demo data: {data}")
    _train(data, **settings)


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "output_format", default="table", type=click.Choice(("table", "json")))
@click.option("--cache-dir", type=click.Path(path_type=Path))
@friendly_errors
def evaluate(run: Path, data: Path, output_format: str, cache_dir: Path | None) -> None:
    """Score the model in RUN on the labelled images in DATA (its val/ folder if it has one, else all)."""
    from vistrain.metrics import classification_metrics
    from vistrain.predict import Predictor

    predictor = Predictor.from_run(run)
    samples, skipped = load_labelled_folder(data, predictor.classes)
    label_of = {s.path: s.label for s in samples}
    result = predictor.predict([s.path for s in samples], cache_dir, show_progress=output_format == "table")
    y_true = np.array([label_of[p] for p in result.paths])
    metrics = classification_metrics(y_true, result.probabilities.argmax(1), predictor.classes)
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
              help="Mark predictions whose probability is below this as uncertain.")
@click.option("--format", "output_format", default="table", type=click.Choice(("table", "csv", "json")))
@click.option("--cache-dir", type=click.Path(path_type=Path))
@friendly_errors
def predict(run: Path, paths: tuple[Path, ...], top_k: int, threshold: float | None, output_format: str,
            cache_dir: Path | None) -> None:
    """Predict the class of image files, or of every file in folders, with the model in RUN."""
    from vistrain.predict import Predictor, expand_paths

    predictor = Predictor.from_run(run)
    files = expand_paths(list(paths))
    result = predictor.predict(files, cache_dir, show_progress=output_format == "table")
    k = min(top_k, len(predictor.classes))
    rows = []
    for path, probs in zip(result.paths, result.probabilities):
        order = np.argsort(-probs)[:k]
        top = [(predictor.classes[i], float(probs[i])) for i in order]
        uncertain = threshold is not None and top[0][1] < threshold
        rows.append({"file": str(path), "class": top[0][0], "probability": top[0][1], "uncertain": uncertain,
                     "top": top, "error": ""})
    rows += [{"file": str(s.path), "class": "", "probability": None, "uncertain": False, "top": [],
              "error": s.reason} for s in result.skipped]
    order_of = {str(p): i for i, p in enumerate(files)}
    rows.sort(key=lambda row: order_of[row["file"]])
    print_predictions(rows, output_format, k)


@main.command("inspect")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--top", default=10, type=click.IntRange(1), help="Images per list.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
@friendly_errors
def inspect_command(run: Path, data: Path | None, top: int, cache_dir: Path | None) -> None:
    """Per class: the most confident, least confident and confidently wrong images, and possible label errors.

    DATA defaults to the run's validation images (their saved predictions are reused). Writes
    RUN/inspect_*.csv and the HTML report RUN/report.html.
    """
    from vistrain.analysis import LIST_TITLES
    from vistrain.inspect_run import inspect

    result = inspect(run, data, top, cache_dir)
    for list_name, by_class in result.lists.items():
        for class_name, entries in by_class.items():
            print_entries(f"{LIST_TITLES[list_name]}: predicted {class_name}", entries, top)
    print_entries(LIST_TITLES["label_errors"], result.label_errors, top)
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


def print_entries(title: str, entries: list, top: int) -> None:
    """A compact table of ranked images; says so when the list is shorter than asked."""
    note = "" if len(entries) >= top else f"  [dim](only {len(entries)} of {top})[/]"
    table = Table(title=f"{title}{note}", title_justify="left", show_edge=False)
    for column, justify in (("#", "right"), ("file", "left"), ("true", "left"), ("predicted", "left"),
                            ("probability", "right")):
        table.add_column(column, justify=justify, overflow="fold")
    for rank, e in enumerate(entries, 1):
        table.add_row(str(rank), e.file.name, e.true, e.predicted, f"{e.probability:.4f}")
    results.print(table)


def print_metrics(metrics: dict) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix as terminal tables."""
    names = list(metrics["per_class"])
    table = Table(title=f"accuracy {metrics['accuracy']:.4f} on {metrics['n_images']} images  "
                        f"(macro F1 {metrics['macro_f1']:.4f})")
    for column in ("class", "precision", "recall", "F1", "images"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, m in metrics["per_class"].items():
        table.add_row(name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    results.print(table)
    matrix = Table(title="confusion matrix")
    matrix.add_column("true ↓  predicted →")
    for name in names:
        matrix.add_column(name, justify="right")
    for name, row in zip(names, metrics["confusion_matrix"]):
        matrix.add_row(name, *map(str, row))
    results.print(matrix)


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
        table.add_row(row["file"], label, f"{row['probability']:.4f}", top)
    results.print(table)


def report_skipped(skipped: list) -> None:
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} file(s):[/]")
        for item in skipped:
            console.print(f"  {item.path}: {item.reason}")
