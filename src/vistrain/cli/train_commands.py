"""`vistrain train` and `vistrain demo`."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from vistrain.cli.main import DATA, DECISIONS, data_source, friendly_errors, label_options, main, training_options
from vistrain.cli.show import print_leaderboard, print_metrics, report_skipped
from vistrain.core.console import console, shown


def _train(data: Path, out, overwrite, cache_dir, image_root=None, decisions=None, class_names=None,
           **settings) -> None:
    from vistrain import api
    from vistrain.training.options import TrainOptions

    show_result(api.train(data, out=out, options=TrainOptions(**settings), cache_dir=cache_dir, overwrite=overwrite,
                          image_root=image_root, decisions=decisions, class_names=class_names, show_progress=True))


def show_result(result) -> None:
    """A finished training's metrics, then the files it skipped (under torchrun: by rank 0 only)."""
    from vistrain.training.distributed import is_main_process

    if is_main_process():
        print_leaderboard(result.leaderboard)
        print_metrics(result.metrics)
        report_skipped(result.skipped)


@main.command()
@DATA
@label_options
@click.option("--resume", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Continue the interrupted run in this directory (its own data and options; others are ignored).")
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Names for classes known by ids, one a line: 'n02123045 tabby, tabby cat' (ImageNet's "
                   "LOC_synset_mapping.txt, or words.txt with a tab). The first name is shown everywhere the classes "
                   "are; the ids stay the classes. Saved in the run's config.json.")
@DECISIONS
@training_options
@friendly_errors
def train(data: Path | None, labels: Path | None, resume: Path | None, **settings) -> None:
    """Train a model on the labelled images in DATA, or on the list given by --labels.

    DATA holds train/<class>/ and val/<class>/ (or validation/) folders, or just <class>/ folders, split into
    training and validation by --val-fraction; or it is SVHN's train_32x32.mat (digits 0-9, converted to PNG class
    folders in the cache once). Class ids follow the sorted folder names. Multi-label and
    regression targets come from a --labels CSV (regression also from folders named by numbers).
    """
    if resume is not None:
        from vistrain import api

        show_result(api.resume(resume, cache_dir=settings["cache_dir"], show_progress=True))
        return
    _train(data_source(data, labels), **settings)


@main.command()
@training_options
@friendly_errors
def demo(**settings) -> None:
    """Train on the built-in demo: 2,624 solar-cell photos (PyPI elpv-dataset), with the logistic head for the
    classification tasks and the MLP for regression, unless --head says otherwise (measured best on these cells).

    --task binary (the default for auto): defective or functional; multiclass: the experts' four defect
    probability levels; multilabel: the cell type (mono/poly) plus defective; regression: the defect probability.
    """
    from vistrain.data.demo import elpv_csv, elpv_root
    from vistrain.core.files import default_cache_dir

    settings["task"] = "binary" if settings["task"] == "auto" else settings["task"]
    if click.get_current_context().get_parameter_source("head") is ParameterSource.DEFAULT:
        # measured best on these cells (benchmarks/elpv_levers.py, elpv_tasks.py)
        settings["head"] = "mlp" if settings["task"] == "regression" else "logistic"
    labels = elpv_csv((settings["cache_dir"] or default_cache_dir()) / "datasets", settings["task"])
    console.print(f"demo data: {shown(str(labels))}")
    _train(labels, image_root=elpv_root(), **settings)
