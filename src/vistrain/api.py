"""The Python API: the whole job in a few calls, each returning what the command line prints.

    import vistrain
    result = vistrain.train("data/", epochs=5)            # TrainResult: run_dir, metrics, history, skipped
    vistrain.evaluate(result.run_dir, "more-data/").metrics
    vistrain.predict(result.run_dir, ["photo.jpg"]).outputs
    vistrain.inspect(result.run_dir).report                # report.html
    vistrain.export(result.run_dir, "onnx")                # model.onnx
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


from vistrain.analysis.evaluate import Evaluation
from vistrain.analysis.evaluate import evaluate as evaluate_run
from vistrain.analysis.inspect import Inspection
from vistrain.analysis.inspect import inspect as inspect_run
from vistrain.core.console import console, shown
from vistrain.core.device import ignore, resolve_device
from vistrain.deploy.export import export as export_run
from vistrain.model.predictor import ImagePredictions, Predictor, expand_paths
from vistrain.training import train as training
from vistrain.training.options import TrainOptions
from vistrain.training.train import TrainResult


def train(data: str | Path, out: str | Path | None = None, options: TrainOptions | None = None, *,
          cache_dir: Path | None = None, overwrite: bool = False, image_root: Path | None = None,
          decisions: Path | None = None, class_names: Path | None = None, verbose: bool = True,
          **settings) -> TrainResult:
    """Train on DATA (a folder, a label CSV with paths relative to `image_root`, or an SVHN .mat) and write the run
    directory with its report. Settings are `TrainOptions` fields, given as `options` or as keywords (`epochs=5`);
    review `decisions` (a file) default to the one beside the data, if any; `class_names`, a mapping file such as
    ImageNet's LOC_synset_mapping.txt, names classes known by ids."""
    options = options or TrainOptions(**settings)
    return training.train(data, out, options, cache_dir, overwrite, verbose, image_root, decisions=decisions,
                          class_names=class_names, report=lambda run: _report(run, verbose))


def resume(run: str | Path, cache_dir: Path | None = None, verbose: bool = True) -> TrainResult:
    """Continue an interrupted `train` from RUN's checkpoint (see `vistrain.training.train.resume`)."""
    return training.resume(run, cache_dir, verbose, report=lambda path: _report(path, verbose))


def _report(run: Path, verbose: bool) -> None:
    """RUN/report.html and the ranked lists, the last of a run's files."""
    report = inspect_run(run, show_progress=False).report
    if verbose:
        console.print(f"report: {shown(str(report))}")


def evaluate(run: str | Path, data: str | Path, image_root: Path | None = None, cache_dir: Path | None = None,
             tta: bool = False, show_progress: bool = True, decisions: Path | None = None, device: str = "auto",
             on_halve: Callable[[int], None] = ignore) -> Evaluation:
    """The model in RUN scored on labelled images (see `vistrain.analysis.evaluate.evaluate`), its backbone on
    `device` ("auto", "cpu" or "cuda"; `on_halve` is told when a batch had to be cut to fit its memory)."""
    return evaluate_run(run, data, image_root, cache_dir, tta, show_progress, decisions, resolve_device(device),
                        on_halve)


def predict(run: str | Path, paths: list[str | Path], cache_dir: Path | None = None, tta: bool = False,
            show_progress: bool = True, device: str = "auto",
            on_halve: Callable[[int], None] = ignore) -> ImagePredictions:
    """Outputs of the model in RUN for image files, or every file in folders, its backbone on `device` (as for
    `evaluate`); unreadable files come back as skipped, with the reason."""
    files, links = expand_paths(paths)
    result = Predictor.from_run(run, resolve_device(device), on_halve).predict(files, cache_dir, show_progress, tta)
    result.skipped = links + result.skipped
    return result


def inspect(run: str | Path, data: str | Path | None = None, top: int = 10, cache_dir: Path | None = None,
            image_root: Path | None = None, show_progress: bool = True, audit: Path | None = None) -> Inspection:
    """The ranked lists and RUN/report.html, on the run's validation images or on DATA; with `audit` (a `vistrain
    audit` folder), training images are ranked by their out-of-sample predictions."""
    return inspect_run(Path(run), Path(data) if data else None, top, cache_dir, show_progress, image_root,
                       Path(audit) if audit else None)


def export(run: str | Path, output_format: str = "onnx", out: str | Path | None = None, int8: bool = False) -> Path:
    """RUN's whole model as one file or folder in `output_format` (onnx, torchscript, tflite, coreml, openvino;
    `int8`: quantised to int8); returns its path."""
    return export_run(run, output_format, out, int8)
