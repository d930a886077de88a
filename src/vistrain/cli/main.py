"""The `vistrain` command group and what its commands share: option sets, DATA or --labels, clear errors.

Commands parse and print; the work is done by the library (`vistrain.api` and the layers below it). Defaults come
from the library (`TrainOptions`), never repeated here.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Iterator

import click

from vistrain.backbones.registry import BackboneUnavailable
from vistrain.cli.show import messages_shown
from vistrain.core.console import printable
from vistrain.core.errors import OptionError
from vistrain.data.matlab import is_mat
from vistrain.data.samples import DataError
from vistrain.model.run_dir import RunError
from vistrain.training.options import BOUNDS, CHOICES, DEFAULTS, parse_duration

USER_ERRORS = (DataError, RunError, BackboneUnavailable, ValueError)
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
FLAGS = {"learning_rate": "--lr", "output_format": "--format"}  # where a flag is not the option's name


def flag_of(name: str) -> str:
    """The command line's flag for an option of the API (`fine_tune` -> `--fine-tune`)."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def option_type(name: str) -> click.ParamType:
    """The click type of a `TrainOptions` field, from the values it accepts (`BOUNDS`, `CHOICES`)."""
    if name in CHOICES:
        return click.Choice(CHOICES[name])
    bounds = BOUNDS[name]
    if bounds.low is None and bounds.high is None:
        return click.INT if bounds.integer else click.FLOAT
    kind = click.IntRange if bounds.integer else click.FloatRange
    return kind(bounds.low, bounds.high, min_open=bounds.low_open, max_open=bounds.high_open)


def friendly_errors(command):
    """Show expected mistakes (bad folders, bad options, damaged runs) as one clear line instead of a traceback."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OptionError as error:
            raise click.ClickException(error.spelled(flag_of)) from None
        except USER_ERRORS as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:
            if error.errno not in FULL_DISK:
                raise
            raise click.ClickException(f"no space left on the device of {error.filename or 'a file vistrain writes'}"
                                       " (--out, --cache-dir): free some, or choose a folder on another disk") from None

    return wrapper


class _Commands(click.Group):
    """The `vistrain` group: every error message, click's own (a bad path given) included, is shown with its control
    characters escaped (`printable`); the library's messages are shown while a command runs."""

    def make_context(self, *args, **kwargs) -> click.Context:
        with _printable_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, context: click.Context):
        with _printable_errors(), messages_shown():
            return super().invoke(context)


@contextmanager
def _printable_errors() -> Iterator[None]:
    try:
        yield
    except click.ClickException as error:
        error.message = printable(error.message)
        raise


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="vistrain")
def main() -> None:
    """Train, evaluate and use image classifiers by transfer learning, on a CPU."""


CACHE_DIR = click.option("--cache-dir", type=click.Path(path_type=Path),
                         help="Cache of features, exported backbones and converted datasets (SVHN's .mat) "
                              "[default: $VISTRAIN_CACHE or ~/.cache/vistrain].")
PRECISION = click.option("--precision", default=DEFAULTS.precision, type=option_type("precision"),
                         help="auto: int8 where the CPU has int8 dot products (AVX-512 VNNI, AVX-VNNI, AMX; ARM "
                              "dotprod, i8mm) and the backbone stays frozen, else fp32 ($VISTRAIN_PRECISION "
                              "overrides what auto picks). int8: the backbone quantised once, calibrated on 256 "
                              "seeded training images, features cached apart. predict, evaluate, inspect and serve "
                              "use the run's own.")

DEVICE = click.option("--device", default=DEFAULTS.device, type=option_type("device"),
                      help="Where torch work runs: auto (a CUDA GPU when there is one, else the CPU), cpu or cuda. On "
                           "CUDA: features computed by torch on the GPU, fine-tuning in mixed precision (bf16, or "
                           "fp16 with loss scaling), and a batch that runs out of GPU memory is run in halves (and "
                           "said so). Under torchrun each process uses the GPU of its LOCAL_RANK.")


def training_options(command):
    """Options shared by `train` and `demo`; defaults from `TrainOptions`."""
    options = [
        click.option("--out", type=click.Path(path_type=Path), help="Run directory [default: runs/<timestamp>]."),
        click.option("--overwrite", is_flag=True,
                     help="Allow an --out directory that already holds a run (its files are removed first, its exports and "
                          "inspect_*.csv included; other files stay)."),
        click.option("--backbone", default=DEFAULTS.backbone,
                     help="A name from `vistrain backbones`, or timm:NAME / torchvision:NAME, optionally @FILE "
                          "(a weights file). Frozen, unless --fine-tune."),
        click.option("--epochs", default=DEFAULTS.epochs, type=option_type("epochs")),
        click.option("--batch-size", default=DEFAULTS.batch_size, type=option_type("batch_size")),
        click.option("--lr", "learning_rate", default=DEFAULTS.learning_rate, type=option_type("learning_rate"),
                     help="Adam learning rate."),
        click.option("--head", default=DEFAULTS.head, type=option_type("head"),
                     help="mlp: dense -> ReLU -> dropout -> output; linear: dropout -> output; logistic: a "
                          "logistic (ridge, for regression) regression on standardised features, fitted in seconds, "
                          "its strength chosen by cross-validation on the training images; multi-class decisions "
                          "tuned for macro F1."),
        click.option("--hidden", default=DEFAULTS.hidden, type=option_type("hidden"),
                     help="Units of the mlp head's dense layer."),
        click.option("--dropout", default=DEFAULTS.dropout, type=option_type("dropout")),
        click.option("--task", default=DEFAULTS.task, type=option_type("task"),
                     help="auto: binary for 2 classes, multiclass for more; from a CSV, multilabel when labels "
                          "are listed as a;b, regression for numbers (more than 2 distinct values)."),
        click.option("--class-weight", type=option_type("class_weight"),
                     help="Weigh the loss against class imbalance (n / (classes x count) per class)."),
        click.option("--sampler", type=option_type("sampler"),
                     help="Draw training batches so that every class comes up equally often."),
        click.option("--augment-views", default=DEFAULTS.augment_views, type=option_type("augment_views"),
                     help="Also train on K augmented versions of each training image (rotation ±20°, shift and zoom "
                          "±10%, flip), their features cached too; costs K extra feature passes the first time."),
        click.option("--val-fraction", default=DEFAULTS.val_fraction, type=option_type("val_fraction"),
                     help="Share of each class held out for validation when DATA has no val/ folder."),
        click.option("--fine-tune", default=DEFAULTS.fine_tune, type=option_type("fine_tune"), metavar="N",
                     help="After the head has trained on frozen features, unfreeze the backbone's last N blocks "
                          "(EfficientNet: stages of model.blocks, plus the conv_head and bn2 after them) and train "
                          "them with the head on the images, augmented (rotation, shift, zoom, flip); frozen "
                          "BatchNorm layers keep their statistics. Kept only if an epoch beats the frozen head's "
                          "validation loss. Slow on a CPU: every epoch runs the backbone on every image again "
                          "(measured on 2 shared cores, --fine-tune 2: about 7 training images/s); see --device. "
                          "0: the backbone stays frozen."),
        click.option("--fine-tune-epochs", default=DEFAULTS.fine_tune_epochs, type=option_type("fine_tune_epochs"),
                     help="Most epochs of fine-tuning (see --patience)."),
        click.option("--fine-tune-lr", type=option_type("fine_tune_lr"),
                     help="The backbone's Adam learning rate while fine-tuning (the head keeps --lr) "
                          "[default: --lr / 10]."),
        click.option("--patience", default=DEFAULTS.patience, type=option_type("patience"),
                     help="Stop fine-tuning after this many epochs without a lower validation loss; the backbone "
                          "and head keep the weights of the epoch with the lowest."),
        PRECISION,
        click.option("--budget", callback=_duration, metavar="DURATION",
                     help="Spend at most this wall time (90s, 10m, 1h; the feature pass included) trying candidates "
                          "from the cheapest up — the frozen heads, a larger backbone's frozen features, the "
                          "backbone's last stages fine-tuned on cached activations, the whole backbone at the data's "
                          "resolution, the best fine-tuned one averaged with the logistic head — and keep the one "
                          "that scores "
                          "best on held-out training images; leaderboard.csv lists them. Without it, the frozen "
                          "head alone."),
        click.option("--candidates", default="", callback=_name_list, metavar="A,B,...", show_default=False,
                     help="With --budget, try only these: logistic, mlp, larger-backbone, upper-stages, whole, "
                          "combined [default: all]."),
        DEVICE,
        click.option("--feature-stages", default="", callback=_stage_list, metavar="I,J,...",
                     help="Also pool these stages of the backbone's model.blocks (0-based; EfficientNet-Lite has 0-6) "
                          "and concatenate them with its final features, in the same forward pass: features from "
                          "several depths keep texture and thin lines (e.g. 3,4,5,6 for images far from ImageNet)."),
        click.option("--seed", default=DEFAULTS.seed, type=option_type("seed")),
        click.option("--label-depth", default=DEFAULTS.label_depth, type=option_type("label_depth"),
                     help="Nested trees: the folder level that names the class (1: the top-level folders, files in "
                          "their sub-folders included)."),
        CACHE_DIR,
    ]
    for option in reversed(options):
        command = option(command)
    return command


DECISIONS = click.option("--decisions", type=click.Path(dir_okay=False, path_type=Path),
                         help="Review decisions (file,decision,label; paths relative to the data folder) "
                              "[default: vistrain-decisions.csv in the data folder, or in the CSV's folder, if there "
                              "is one].")


DATA = click.argument("data", required=False, type=click.Path(exists=True, path_type=Path))


def _duration(context, parameter, value: str | None) -> float | None:
    try:
        return None if value is None else parse_duration(value)
    except OptionError as error:
        raise click.BadParameter(error.template.removeprefix("{budget} ")) from None


def _name_list(context, parameter, value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _stage_list(context, parameter, value: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of stage numbers") from None


def label_options(command):
    """DATA or --labels, for `train`, `evaluate` and `inspect`."""
    command = click.option("--image-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
                           help="Folder the --labels paths are relative to [default: the CSV's folder].")(command)
    return click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="CSV of path,label rows (path,\"a;b\" for multi-label; path,value[,value...] for "
                             "regression; optional header and split column), or ILSVRC's LOC_val_solution.csv "
                             "(recognised by its header ImageId,PredictionString), instead of DATA.")(command)


def data_source(data: Path | None, labels: Path | None, required: bool = True) -> Path | None:
    """DATA (a folder, or an SVHN .mat file) or --labels, not both."""
    if data is not None and labels is not None:
        raise click.UsageError("give DATA or --labels, not both (--image-root sets where --labels paths start)")
    if required and data is None and labels is None:
        raise click.UsageError("give DATA (a folder of class folders, or an SVHN .mat file) or --labels FILE.csv")
    if data is not None and data.is_file() and not is_mat(data):
        raise click.UsageError(f"DATA {data} is a file: DATA is a folder or an SVHN .mat file; give a CSV list "
                               "with --labels")
    return data if data is not None else labels
