"""Benchmark: vistrain's CUDA path end to end on a small real set: train (with `--budget` where vistrain has it, else
`--fine-tune 1`), predict, export to ONNX and run the export with ONNX Runtime. Prints a Markdown table: device,
seconds, images, images/s, accuracy, peak GPU memory per step.

    python benchmarks/gpu_check.py [--data FOLDER | --data elpv] [--device cuda|cpu] [--budget 2m] [--per-class N]

The data: a folder of train/<class>/ and val/<class>/ folders (default: ../shared/datasets/cats-vs-dogs where it
exists, else the elpv demo, binary, from its PyPI package); `--per-class N` copies the first N images per class and
split into a scratch folder first. Every step runs in this process through the `vistrain` command line (so its
peak GPU memory can be read), with an empty feature cache: features are computed on the device.

`--device cuda` (the default) stops at once, in one line, where there is no CUDA GPU. `--device cpu` runs the same
steps on the CPU: that is how the script itself is tested (tests/test_device.py).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"


def vistrain(*args: str) -> tuple[str, float, float | None]:
    """Run one `vistrain` command in this process: (its stdout, seconds, peak GPU memory in MiB or None)."""
    import click

    from vistrain.cli import main

    if torch.cuda.is_initialized():  # by an earlier step on the GPU
        torch.cuda.reset_peak_memory_stats()
    output = io.StringIO()
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(output):
            main.main(args=[str(a) for a in args], standalone_mode=False)
    except click.ClickException as error:
        sys.exit(f"gpu_check: vistrain {args[0]}: {error.format_message()}")
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None
    return output.getvalue(), seconds, peak


def has_option(command: str, option: str) -> bool:
    """Whether `vistrain COMMAND` takes `option` (e.g. --budget, not in every version)."""
    from vistrain.cli import main

    return any(option in parameter.opts for parameter in main.commands[command].params)


def subset(folder: Path, per_class: int, destination: Path) -> Path:
    """The first `per_class` files of every class folder of every split of `folder`, copied to `destination`."""
    for split in sorted(p for p in folder.iterdir() if p.is_dir()):
        for class_folder in sorted(p for p in split.iterdir() if p.is_dir()):
            target = destination / split.name / class_folder.name
            target.mkdir(parents=True)
            for image in sorted(class_folder.iterdir())[:per_class]:
                shutil.copy(image, target / image.name)
    return destination


def data_arguments(data: str, per_class: int | None, scratch: Path) -> list[str]:
    """The data arguments of `vistrain train` for `data`: a folder, or "elpv" (the demo's binary CSV)."""
    if data == "elpv":
        from vistrain.data.demo import elpv_csv, elpv_root

        return ["--labels", str(elpv_csv(scratch / "elpv", "binary")), "--image-root", str(elpv_root())]
    folder = Path(data)
    if not folder.is_dir():
        sys.exit(f"gpu_check: --data {data}: no such folder (give a folder of train/ and val/ class folders, or elpv)")
    return [str(subset(folder, per_class, scratch / "data") if per_class else folder)]


def onnx_accuracy(model: Path, files: list[str], truth: list[str], preprocess: dict) -> tuple[float, float]:
    """(accuracy, seconds) of the exported model run by ONNX Runtime on the CPU over `files`, in batches of 32."""
    import onnxruntime

    from vistrain.backbones.preprocess import Preprocess
    from vistrain.features.inputs import prepare_image

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])
    started, predicted = time.perf_counter(), []
    for start in range(0, len(files), 32):
        batch = np.stack([prepare_image(f, Preprocess.from_dict(preprocess)) for f in files[start:start + 32]])
        predicted += [classes[i] for i in session.run(None, {session.get_inputs()[0].name: batch})[0].argmax(1)]
    return float(np.mean([p == t for p, t in zip(predicted, truth)])), time.perf_counter() - started


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_FOLDER) if DEFAULT_FOLDER.is_dir() else "elpv")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--budget", default="2m", help="train's --budget, where vistrain has the option")
    parser.add_argument("--fine-tune-epochs", default=2, type=int, help="where --budget is not an option yet")
    parser.add_argument("--per-class", type=int, help="use only the first N images per class and split")
    args = parser.parse_args()

    from vistrain.cli.main import flag_of
    from vistrain.core.device import describe_device, resolve_device
    from vistrain.core.errors import OptionError

    try:
        device = resolve_device(args.device)  # no GPU: one line, before any work
    except ValueError as error:
        sys.exit(f"gpu_check: {error.spelled(flag_of) if isinstance(error, OptionError) else error}")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        scratch = Path(scratch)
        run, common = scratch / "run", ["--device", args.device]
        how = (["--budget", args.budget] if has_option("train", "--budget")
               else ["--fine-tune", "1", "--fine-tune-epochs", str(args.fine_tune_epochs)])
        _, train_seconds, train_peak = vistrain("train", *data_arguments(args.data, args.per_class, scratch),
                                                "--out", run, "--cache-dir", scratch / "train-cache", *how, *common)
        metrics = json.loads((run / "metrics.json").read_text())
        config = json.loads((run / "config.json").read_text())
        with open(run / "predictions.csv") as file:
            saved = list(csv.DictReader(file))
        files, truth = [row["file"] for row in saved], [row["true"] for row in saved]
        output, predict_seconds, predict_peak = vistrain("predict", run, *files, "--format", "csv",
                                                         "--cache-dir", scratch / "predict-cache", *common)
        predicted = {row["file"]: row["class"] for row in csv.DictReader(io.StringIO(output))}
        predict_accuracy = float(np.mean([predicted.get(f) == t for f, t in zip(files, truth)]))
        _, export_seconds, _ = vistrain("export", run, "--out", scratch / "model.onnx")
        onnx, onnx_seconds = onnx_accuracy(scratch / "model.onnx", files, truth, config["preprocess"])
        size = (scratch / "model.onnx").stat().st_size / 1e6

    n_train, n_val = metrics["n_train"], len(files)
    timing = metrics["timing"]
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; device {describe_device(device)}; "
          f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}); CPU {cpu_name()}, {os.cpu_count()} cores; "
          f"data {args.data}" + (f" ({args.per_class} per class and split)" if args.per_class else ""))
    features = timing.get("features_per_second") or 0  # None: every feature came from the cache
    tuning = timing.get("fine_tune_images_per_second")
    print(f"train: {' '.join(how + common)}; predict: {' '.join(common)}; input {config['preprocess']['input_size']} "
          f"px; features {features:.1f} images/s" + (f"; fine-tuning {tuning:.1f} training images/s" if tuning else ""))
    print("| step | device | seconds | images | images/s | accuracy | peak GPU memory (MiB) |")
    print("|---|---|---|---|---|---|---|")
    rows = [(f"train ({' '.join(how)})", args.device, train_seconds, n_train + n_val, metrics["accuracy"],
             train_peak),
            ("predict (validation images, empty cache)", args.device, predict_seconds, n_val, predict_accuracy,
             predict_peak),
            (f"export ONNX ({size:.1f} MB)", "cpu", export_seconds, None, None, None),
            ("exported model on ONNX Runtime", "cpu", onnx_seconds, n_val, onnx, None)]
    for step, where, seconds, images, accuracy, peak in rows:
        print(f"| {step} | {where} | {seconds:.1f} | {images or '-'} | {f'{images / seconds:.1f}' if images else '-'} "
              f"| {f'{accuracy:.4f}' if accuracy is not None else '-'} "
              f"| {f'{peak:.0f}' if peak is not None else '-'} |")

if __name__ == "__main__":
    main()
