"""Using a trained run: `evaluate`, `predict`, `inspect`, `export`, `serve`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vistrain.cli.main import CACHE_DIR, DATA, DECISIONS, DEVICE, data_source, friendly_errors, label_options, main
from vistrain.cli.show import print_entries, print_metrics, print_predictions, report_skipped, say_halved
from vistrain.core.console import console, shown
from vistrain.deploy.formats import FORMATS, export_size
from vistrain.deploy.limits import Limits
from vistrain.model.run_dir import EXPORTS

RUN = click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
TTA = click.option("--tta", is_flag=True, help="Test-time augmentation: average each image's and its mirror's outputs.")
LIMITS = Limits()
THRESHOLD = click.option("--threshold", type=click.FloatRange(0, 1),
                         help="Mark predictions whose probability is below this as uncertain; multi-label models: one "
                              "threshold for every label instead of the ones tuned on validation.")


@main.command()
@RUN
@DATA
@label_options
@click.option("--format", "output_format", default="table", type=click.Choice(("table", "json")))
@TTA
@DECISIONS
@DEVICE
@CACHE_DIR
@friendly_errors
def evaluate(run: Path, data: Path | None, labels: Path | None, image_root: Path | None, output_format: str,
             tta: bool, decisions: Path | None, device: str, cache_dir: Path | None) -> None:
    """Score the model in RUN on labelled images: DATA (its val/ folder if it has one, else all; an SVHN .mat such
    as test_32x32.mat: all of it) or --labels."""
    from vistrain import api

    result = api.evaluate(run, data_source(data, labels), image_root=image_root, cache_dir=cache_dir, tta=tta,
                          show_progress=output_format == "table", decisions=decisions, device=device,
                          on_halve=say_halved("feature batches"))
    if output_format == "json":
        skipped = [{"file": str(s.path), "reason": s.reason} for s in result.skipped]
        click.echo(json.dumps({**result.metrics, "skipped": skipped}, indent=2))
    else:
        print_metrics(result.metrics)
        report_skipped(result.skipped)


@main.command()
@RUN
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=3, type=click.IntRange(1), help="Classes shown per image.")
@THRESHOLD
@click.option("--format", "output_format", default="table", type=click.Choice(("table", "csv", "json")))
@TTA
@DEVICE
@CACHE_DIR
@friendly_errors
def predict(run: Path, paths: tuple[Path, ...], top_k: int, threshold: float | None, output_format: str,
            tta: bool, device: str, cache_dir: Path | None) -> None:
    """Predict image files, or every file in folders, with the model in RUN: the class, the labels over their
    thresholds (multi-label) or the values (regression)."""
    from vistrain.core.device import resolve_device
    from vistrain.model.predictor import Predictor, expand_paths

    predictor = Predictor.from_run(run, resolve_device(device), say_halved("feature batches"))
    predictor.check_threshold(threshold)
    files, links = expand_paths(list(paths))
    result = predictor.predict(files, cache_dir, show_progress=output_format == "table", tta=tta)
    k = min(top_k, len(predictor.classes))
    rows = [{"file": str(path), **row, "error": ""}
            for path, row in zip(result.paths, predictor.describe(result.outputs, threshold, k))]
    rows += [{"file": str(s.path), "class": "", "probability": None, "uncertain": False, "top": [],
              "error": s.reason} for s in links + result.skipped]
    order_of = {str(p): i for i, p in enumerate(files)}
    rows.sort(key=lambda row: order_of.get(row["file"], len(files)))  # links to folders last
    print_predictions(rows, output_format, k)


@main.command("inspect")
@RUN
@DATA
@label_options
@click.option("--top", default=10, type=click.IntRange(1), help="Images per list.")
@click.option("--audit", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A `vistrain audit` folder: rank the run's training images by their out-of-sample predictions "
                   "(the run's own model has fitted their labels, wrong ones included).")
@CACHE_DIR
@friendly_errors
def inspect_command(run: Path, data: Path | None, labels: Path | None, image_root: Path | None, top: int,
                    audit: Path | None, cache_dir: Path | None) -> None:
    """Per class: the most confident, least confident and confidently wrong images, and possible label errors;
    per label for multi-label models; the largest errors for regression.

    DATA (or --labels) defaults to the run's validation images (their saved predictions are reused). Writes
    RUN/inspect_*.csv and the HTML report RUN/report.html.
    """
    from vistrain import api
    from vistrain.analysis.ranking import LIST_TITLES

    result = api.inspect(run, data_source(data, labels, required=False), top=top, cache_dir=cache_dir,
                         image_root=image_root, show_progress=True, audit=audit)
    for lists in result.lists.values():
        for list_name, by_class in lists.items():
            for class_name, entries in by_class.items():
                print_entries(f"{LIST_TITLES[list_name]}: predicted {class_name}", entries, top)
    if result.label_errors:
        regression = result.label_errors[0].error is not None
        print_entries(LIST_TITLES["largest_errors" if regression else "label_errors"], result.label_errors, top)
    console.print(("reused the saved predictions; " if result.reused_predictions else "")
                  + (f"{result.out_of_sample} training images ranked by the audit's out-of-sample predictions; "
                     if result.out_of_sample else "")
                  + f"CSV files in {shown(str(run))}/inspect_*.csv; report: {shown(str(result.report))}")


@main.command()
@RUN
@click.option("--format", "output_format", default="onnx", type=click.Choice(tuple(FORMATS)),
              help="onnx, torchscript; tflite (LiteRT: Android, embedded Linux), coreml (iOS, macOS), openvino (Intel "
                   "CPUs, GPUs, NPUs): these three need their extra, e.g. pip install 'vistrain[tflite]'.")
@click.option("--out", type=click.Path(path_type=Path),
              help="File (folder for coreml and openvino) to write [default, by format and --int8: "
                   f"{', '.join(f'RUN/{name}' for names in EXPORTS.values() for name in names)}].")
@click.option("--int8", is_flag=True,
              help="Quantise the model to int8 (onnx, tflite, openvino: weights and activations, calibrated on the "
                   "run's training images, then checked: prints its size and how often its top class is the fp32 "
                   "model's on the validation images; coreml: int8 weights).")
@friendly_errors
def export(run: Path, output_format: str, out: Path | None, int8: bool) -> None:
    """Write the model in RUN as one file or folder: uint8 RGB images (size x size x 3, resized and centre-cropped)
    in, class probabilities (or values) out, with classes, task and preprocessing as metadata."""
    from vistrain import api

    path = api.export(run, output_format=output_format, out=out, int8=int8)
    size = export_size(path) / 1e6
    console.print(f"{output_format} model{' (int8)' if int8 else ''} -> {shown(str(path))} ({size:.2f} MB)")
    if not int8:
        return
    values = FORMATS[output_format].read_metadata(path)
    if "int8_check" not in values:
        console.print(f"int8: {size:.2f} MB; {shown(values.get('quantization', ''))}; not checked against fp32: "
                      f"its runtime does not run here")
        return
    check = json.loads(values["int8_check"])
    same = (f"the same top class as the fp32 model on {check['top1_agreement']:.1%}"
            if check["top1_agreement"] is not None else "outputs")
    console.print(f"int8: {size:.2f} MB against {check['fp32_bytes'] / 1e6:.2f} MB in fp32; "
                  f"{same} of {check['images']} validation images calibration did not use (mean absolute "
                  f"difference of the outputs {check['mean_abs_difference']:.4f}); calibrated on "
                  f"{check['calibration_images']} images")


@main.command()
@RUN
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, type=click.IntRange(0, 65535))
@THRESHOLD
@click.option("--max-bytes", default=LIMITS.max_bytes, type=click.IntRange(1),
              help="Largest request body accepted, all its files together (bytes).")
@click.option("--max-files", default=LIMITS.max_files, type=click.IntRange(1), help="Most files in one request.")
@click.option("--max-pixels", default=LIMITS.max_pixels, type=click.IntRange(1),
              help="Most pixels of all the images of one request together, at their full size.")
@click.option("--decode-threads", default=LIMITS.decode_threads, type=click.IntRange(1),
              help="Images decoded at once [default: the number of CPUs].")
@click.option("--max-queued", default=LIMITS.max_queued, type=click.IntRange(0),
              help="Images that may wait for a decoding thread; beyond them requests are refused with 503.")
@click.option("--max-batch", default=16, type=click.IntRange(1), help="Most images in one forward pass.")
@click.option("--max-wait-ms", default=5.0, type=click.FloatRange(0),
              help="How long the first image of a batch waits for others.")
@click.option("--docs", is_flag=True, help="Also serve the API's documentation: /docs, /redoc and /openapi.json.")
@DEVICE
@friendly_errors
def serve(run: Path, host: str, port: int, threshold: float | None, max_bytes: int, max_files: int, max_pixels: int,
          decode_threads: int, max_queued: int, max_batch: int, max_wait_ms: float, docs: bool, device: str) -> None:
    """Serve the model in RUN over HTTP: POST /predict (multipart field `files`), GET /health, and a web page at /."""
    import uvicorn

    from vistrain.core.device import resolve_device
    from vistrain.deploy.serve import create_app

    limits = Limits(max_bytes, max_files, max_pixels, decode_threads, max_queued)
    app = create_app(run, threshold, limits, max_batch, max_wait_ms / 1000, docs, resolve_device(device),
                     say_halved("image batches"))
    uvicorn.run(app, host=host, port=port)
