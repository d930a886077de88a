"""Commands on data and backbones: `split`, `check`, `augment-preview`, `backbones`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from vistrain.cli.main import CACHE_DIR, DECISIONS, friendly_errors, main
from vistrain.cli.show import report_skipped
from vistrain.core.console import console, results, shown
from vistrain.data.folders import DEFAULT_PATTERN
from vistrain.data.organise import LINK_MODES
from vistrain.training.options import DEFAULTS


@main.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--val-fraction", default=DEFAULTS.val_fraction, type=click.FloatRange(0, 1, max_open=True))
@click.option("--test-fraction", default=0.0, type=click.FloatRange(0, 1, max_open=True),
              help="Also write DEST/test/<class>/.")
@click.option("--per-class", type=click.IntRange(1), help="Take a random N images per class (the course uses 250).")
@click.option("--pattern", default=DEFAULT_PATTERN,
              help="Flat folders: regex with a named group `label`, matched at the start of each file name.")
@click.option("--label-depth", default=DEFAULTS.label_depth, type=click.IntRange(1),
              help="Class folder trees: the folder level that names the class (1: the top-level folders), as in "
                   "`train`.")
@click.option("--image-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="CSV lists: folder the paths are relative to [default: the CSV's folder].")
@click.option("--link", "mode", default="hardlink", type=click.Choice(LINK_MODES),
              help="How files get into DEST; originals are never moved or deleted.")
@click.option("--copy", "mode", flag_value="copy", help="Same as --link copy.")
@click.option("--symlink", "mode", flag_value="symlink", help="Same as --link symlink.")
@click.option("--force", is_flag=True, help="Write into a DEST that is not empty.")
@click.option("--seed", default=DEFAULTS.seed, type=int)
@DECISIONS
@CACHE_DIR
@friendly_errors
def split(source: Path, dest: Path, val_fraction: float, test_fraction: float, per_class: int | None, pattern: str,
          label_depth: int, image_root: Path | None, mode: str, force: bool, seed: int,
          decisions: Path | None, cache_dir: Path | None) -> None:
    """Organise SOURCE (a flat folder of files named like cat.1.jpg, a tree of class folders, a CSV of path,label
    rows, or SVHN's train_32x32.mat / test_32x32.mat) into DEST/train/<class>/ and DEST/val/<class>/, stratified by
    class and seeded, as `train` splits a folder of class folders. Review decisions are honoured: excluded images
    are left out, relabelled ones go to their new class (the cleaned dataset as a new tree); SOURCE is never
    changed."""
    from vistrain.data.organise import split_dataset

    result = split_dataset(source, dest, val_fraction, test_fraction, seed, per_class, pattern, label_depth,
                           image_root, mode, force, decisions, cache_dir)
    console.print(f"{shown(result.source)} -> {shown(str(dest))} ({result.mode})")
    table = Table()
    table.add_column("class")
    for name in result.written:
        table.add_column(name, justify="right")
    for label in sorted({label for classes in result.written.values() for label in classes}):
        table.add_row(shown(label), *(str(len(classes.get(label, []))) for classes in result.written.values()))
    table.add_row("[b]total[/]", *(str(sum(map(len, classes.values()))) for classes in result.written.values()))
    results.print(table)
    report_skipped(result.skipped)
    if result.left_alone:
        console.print(f"[yellow]warning:[/] {len(result.left_alone)} file(s) in {shown(str(dest))} were not placed by "
                      "this split (not in its manifest) and were left alone, so DEST is not exactly this split: "
                      + ", ".join(shown(str(path)) for path in result.left_alone[:5]))


@main.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--threshold", default=4, type=click.IntRange(0, 64),
              help="Near duplicates: at most this many of the 64 perceptual-hash bits differ.")
@click.option("--min-size", default=32, type=click.IntRange(1), help="Flag images smaller than this on a side.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="vistrain-check",
              help="Folder for the CSV files.")
@DECISIONS
@friendly_errors
def check(data: Path, threshold: int, min_size: int, out: Path, decisions: Path | None) -> None:
    """Check DATA before training: counts, unreadable files, sizes, duplicates, train/val leakage, label conflicts."""
    from rich.progress import Progress

    from vistrain.data.check import CHECK_FILES, check_dataset, imbalance, size_summary, write_check_files

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("checking", total=None)
        result = check_dataset(data, threshold, on_file=lambda done, total: progress.update(task, completed=done,
                                                                                            total=total),
                               decisions=decisions)
    table = Table(title="images per class")
    table.add_column("class")
    for split in result.counts:
        table.add_column(split, justify="right")
    for label in sorted({label for counts in result.counts.values() for label in counts}):
        table.add_row(shown(label), *(str(result.counts[s].get(label, 0)) for s in result.counts))
    table.add_row("[b]imbalance (largest/smallest)[/]", *(f"{imbalance(c):.2f}" for c in result.counts.values()))
    results.print(table)
    sizes = size_summary(result.records, min_size)
    if result.records:
        results.print(f"sizes (min / median / max): width {sizes['width']}, height {sizes['height']}; "
                      f"{len(sizes['tiny'])} smaller than {min_size} px on a side")
    results.print(f"unreadable files: {len(result.unreadable)}"
                  + (f"; excluded in review: {len(result.excluded)}" if result.excluded else ""))
    for kind in ("exact", "near"):
        pairs = [p for p in result.pairs if p.kind == kind]
        results.print(f"{kind} duplicates: {len(pairs)} pair(s), {sum(p.a.split != p.b.split for p in pairs)} across "
                      f"splits (leakage), {sum(p.a.label != p.b.label for p in pairs)} with conflicting labels")
        for pair in pairs[:20]:
            results.print(f"  {shown(str(pair.a.path))}  ~  {shown(str(pair.b.path))}  "
                          f"(distance {pair.distance}; {pair.where})")
    write_check_files(result, out)
    console.print(f"CSV files in {shown(str(out))}/: {', '.join(CHECK_FILES)}")


@main.command("augment-preview")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="augment-preview.png")
@click.option("--images", default=4, type=click.IntRange(1), help="Training images shown (rows).")
@click.option("--views", default=5, type=click.IntRange(1), help="Augmented versions of each (columns).")
@click.option("--rotation", default=20.0, type=click.FloatRange(0, 180), help="Degrees, either way.")
@click.option("--shift", default=0.1, type=click.FloatRange(0, 1), help="Share of width/height, either way.")
@click.option("--zoom", default=0.1, type=click.FloatRange(0, 1, max_open=True), help="Scale 1 ± zoom.")
@click.option("--flip/--no-flip", default=True, help="Random horizontal flips.")
@click.option("--backbone", default=DEFAULTS.backbone, help="Whose input size and resizing to use.")
@click.option("--seed", default=DEFAULTS.seed, type=int)
@friendly_errors
def augment_preview(data: Path, out: Path, images: int, views: int, rotation: float, shift: float, zoom: float,
                    flip: bool, backbone: str, seed: int) -> None:
    """Save a grid: a few training images of DATA, each beside augmented versions of it."""
    from vistrain.analysis.augment_preview import write_preview
    from vistrain.features.transforms import Augmentation

    augmentation = Augmentation(rotation, shift, zoom, flip)
    report_skipped(write_preview(data, out, augmentation, images, views, backbone, seed))
    console.print(f"augmentation {augmentation.to_dict()} -> {shown(str(out))}")


@main.command("backbones")
def backbones_command() -> None:
    """List the backbones: size, input size, ImageNet accuracy, licence, and how to install the missing ones."""
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
            results.print(f"to install {backbone.name}: {shown(backbone.install)}")
    results.print(NAMING_HELP)
