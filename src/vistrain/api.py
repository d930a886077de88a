"""The Python API: the whole job in a few calls. The data or the run comes first; every other argument is a keyword.

    import vistrain
    result = vistrain.train("data/", epochs=5)              # TrainResult: run_dir, metrics, history, skipped
    model = result.load()                                   # or vistrain.load("runs/..."): loaded once
    model.predict("photo.jpg")                              # Prediction: label, probability, probabilities
    model.predict([pil_image, array, "folder/"])            # Predictions: one per image, and .skipped
    vistrain.evaluate(result.run_dir, "more-data/").metrics
    vistrain.inspect(result.run_dir).report                 # report.html
    vistrain.export(result.run_dir, output_format="onnx")   # model.onnx

The library prints nothing: what training has to say goes to the `vistrain` logger (`logging.basicConfig(
level=logging.INFO)` shows it), each epoch's result to `on_epoch`; the command line shows both. A setting out of
range, or one that does not fit another, is an `OptionError` (a ValueError) naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from vistrain.analysis.evaluate import Evaluation
from vistrain.analysis.evaluate import evaluate as evaluate_run
from vistrain.analysis.inspect import Inspection
from vistrain.analysis.inspect import inspect as inspect_run
from vistrain.core.device import ignore, resolve_device
from vistrain.core.errors import OptionError
from vistrain.core.messages import say
from vistrain.deploy.export import export as export_run
from vistrain.model.loaded import AnImage, Model, Prediction, Predictions
from vistrain.training import train as training
from vistrain.training.engine import EpochResult
from vistrain.training.options import TrainOptions
from vistrain.training.train import TrainResult

__all__ = ["Model", "OptionError", "Prediction", "Predictions", "TrainOptions", "TrainResult", "evaluate", "export",
           "inspect", "load", "predict", "resume", "train"]


def train(data: str | Path, *, out: str | Path | None = None, options: TrainOptions | None = None,
          cache_dir: Path | None = None, overwrite: bool = False, image_root: Path | None = None,
          decisions: Path | None = None, class_names: Path | None = None, show_progress: bool = False,
          on_epoch: Callable[[EpochResult], None] = ignore, **settings) -> TrainResult:
    """Train on DATA (a folder, a label CSV with paths relative to `image_root`, or an SVHN .mat) and write the run
    directory with its report; `result.load()` gives the trained model. Settings are `TrainOptions` fields, given
    as keywords (`epochs=5`) or as `options`, not both; review `decisions` (a file) default to the one beside the
    data, if any; `class_names`, a mapping file such as ImageNet's LOC_synset_mapping.txt, names classes known by
    ids. `on_epoch` is told each epoch's result (`EpochResult`) as it ends; `show_progress` draws a progress bar of
    the feature pass on stderr."""
    if options is not None and settings:
        raise OptionError(f"give settings as {{options}} or as keywords ({', '.join(sorted(settings))}), not both")
    return training.train(data, out, options or TrainOptions(**settings), cache_dir, overwrite, show_progress,
                          image_root, decisions=decisions, class_names=class_names, report=_report,
                          on_epoch=on_epoch)


def resume(run: str | Path, *, cache_dir: Path | None = None, show_progress: bool = False,
           on_epoch: Callable[[EpochResult], None] = ignore) -> TrainResult:
    """Continue an interrupted `train` from RUN's checkpoint (see `vistrain.training.train.resume`)."""
    return training.resume(run, cache_dir, show_progress, report=_report, on_epoch=on_epoch)


def _report(run: Path) -> None:
    """RUN/report.html and the ranked lists, the last of a run's files."""
    report = inspect_run(run, show_progress=False).report
    say(f"report: {report}")


def load(run: str | Path, *, device: str = "auto", cache_dir: Path | None = None,
         on_halve: Callable[[int], None] = ignore) -> Model:
    """The trained model in RUN (a complete run directory), loaded once to predict images (`Model.predict`), its
    backbone on `device` ("auto", "cpu" or "cuda"; `on_halve` is told when a batch had to be cut to fit its
    memory); features are cached in `cache_dir` [default: $VISTRAIN_CACHE or ~/.cache/vistrain]."""
    return Model.from_run(run, device=device, cache_dir=cache_dir, on_halve=on_halve)


def evaluate(run: str | Path, data: str | Path, *, image_root: Path | None = None, cache_dir: Path | None = None,
             tta: bool = False, show_progress: bool = False, decisions: Path | None = None, device: str = "auto",
             on_halve: Callable[[int], None] = ignore) -> Evaluation:
    """The model in RUN scored on labelled images (see `vistrain.analysis.evaluate.evaluate`), its backbone on
    `device` ("auto", "cpu" or "cuda"; `on_halve` is told when a batch had to be cut to fit its memory)."""
    return evaluate_run(run, data, image_root, cache_dir, tta, show_progress, decisions, resolve_device(device),
                        on_halve)


def predict(run: str | Path, images: AnImage | Sequence[AnImage], *, tta: bool = False,
            threshold: float | None = None, show_progress: bool = False, cache_dir: Path | None = None,
            device: str = "auto", on_halve: Callable[[int], None] = ignore) -> Prediction | Predictions:
    """`load(run).predict(images)` once: to predict more than once, keep the model `load` gives."""
    model = load(run, device=device, cache_dir=cache_dir, on_halve=on_halve)
    return model.predict(images, tta=tta, threshold=threshold, show_progress=show_progress)


def inspect(run: str | Path, data: str | Path | None = None, *, top: int = 10, cache_dir: Path | None = None,
            image_root: Path | None = None, show_progress: bool = False, audit: Path | None = None) -> Inspection:
    """The ranked lists and RUN/report.html, on the run's validation images or on DATA; with `audit` (a `vistrain
    audit` folder), training images are ranked by their out-of-sample predictions."""
    return inspect_run(Path(run), Path(data) if data else None, top, cache_dir, show_progress, image_root,
                       Path(audit) if audit else None)


def export(run: str | Path, *, output_format: str = "onnx", out: str | Path | None = None,
           int8: bool = False) -> Path:
    """RUN's whole model as one file or folder in `output_format` (onnx, torchscript, tflite, coreml, openvino;
    `int8`: quantised to int8); returns its path."""
    return export_run(run, output_format, out, int8)
