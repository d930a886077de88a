"""Benchmark: every export format of one run, each in its own runtime, on the same photos: file size, top-1
agreement with `vistrain predict`, single-image latency and batch throughput on this CPU; and the backbone's feature
extraction by ONNX Runtime against OpenVINO (is OpenVINO worth a feature engine here?).

    python benchmarks/edge.py RUN [--images 500] [--out FOLDER]

RUN is a trained run (e.g. `vistrain train ../shared/datasets/cats-vs-dogs --out runs/cvd --seed 1`); the photos
are its validation images, decoded and cropped by vistrain (`prepare_image`), so the formats are compared on the
same pixels. ONNX Runtime, LiteRT and OpenVINO run with every core; OpenVINO with its default arithmetic (bf16 on
CPUs with AMX or AVX-512 BF16) and, in a row of its own, told to compute in f32. Core ML runs on Apple devices only:
its size alone. Needs the extras tflite, coreml and openvino. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from vistrain.deploy.export import export
from vistrain.features.inputs import prepare_image
from vistrain.deploy.formats import export_size
from vistrain.features.runtime import model_path
from vistrain.model.predictor import Predictor
from vistrain.model.run_dir import read_saved_predictions

CORES = os.cpu_count() or 1
BATCH = 32
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
Runner = Callable[[np.ndarray], np.ndarray]


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return f"{name}, {CORES} cores ({', '.join(f for f in FLAGS if f in flags)})"


def onnx_runner(path: Path, threads: int = CORES) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def litert_runner(path: Path) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    run = Interpreter(model_path=str(path), num_threads=CORES).get_signature_runner("serving_default")
    return lambda images: np.concatenate([run(images=image[None])["outputs"] for image in images])  # batch 1


def openvino_runner(path: Path, config: dict | None = None) -> Runner:
    import openvino

    model = path / "model.xml" if path.is_dir() else path
    compiled = openvino.Core().compile_model(str(model), "CPU", config or {})
    return lambda images: compiled(images)[0]


def timings(run: Runner, images: np.ndarray) -> tuple[float, float]:
    """(median ms for one image, images/s in batches of BATCH), after a warm-up."""
    run(images[:1])
    run(images[:BATCH])
    single = []
    for image in images[:30]:
        started = time.perf_counter()
        run(image[None])
        single.append(time.perf_counter() - started)
    batches = [images[i : i + BATCH] for i in range(0, min(len(images), 4 * BATCH), BATCH)]
    started = time.perf_counter()
    for batch in batches:
        run(batch)
    return statistics.median(single) * 1000, sum(map(len, batches)) / (time.perf_counter() - started)


def formats(run: Path, folder: Path) -> list[tuple[str, str, Path, Runner | None]]:
    """(format, precision, path, runner) of every export of `run`, written into `folder`."""
    rows = []
    for name, suffix in (("onnx", ".onnx"), ("tflite", ".tflite"), ("openvino", "_openvino"),
                         ("coreml", ".mlpackage")):
        for int8 in (False, True):
            path = folder / f"model{'-int8' if int8 else ''}{suffix}"
            if not path.exists():  # an --out folder keeps them for the next run
                export(run, name, path, int8=int8)
            precision = "int8" if int8 else "fp32"
            if name == "onnx":
                rows.append((name, precision, path, onnx_runner(path)))
            elif name == "tflite":
                rows.append((name, precision, path, litert_runner(path)))
            elif name == "openvino":
                rows.append((name, f"{precision} (OpenVINO's default arithmetic)", path, openvino_runner(path)))
                rows.append((name, f"{precision}, f32 arithmetic", path,
                             openvino_runner(path, {"INFERENCE_PRECISION_HINT": "f32"})))
            else:
                rows.append((name, "int8 weights, fp16" if int8 else "fp16", path, None))
    return rows


def feature_engines(predictor: Predictor, images: np.ndarray, cache: Path) -> list[tuple[str, float, float]]:
    """(engine, images/s, max |difference| to ONNX Runtime) computing the backbone's features as vistrain does:
    as many single-threaded batches at once as there are cores (up to 4)."""
    path = model_path(cache, predictor.backbone, predictor.preprocess)
    pixels = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    batches = [pixels[i : i + BATCH] for i in range(0, len(pixels), BATCH)]
    at_once = min(4, CORES)
    engines = {"ONNX Runtime": [onnx_runner(path, threads=CORES // at_once) for _ in range(at_once)],
               "OpenVINO, f32": [openvino_runner(path, {"INFERENCE_PRECISION_HINT": "f32",
                                                        "INFERENCE_NUM_THREADS": CORES // at_once})
                                 for _ in range(at_once)],
               "OpenVINO, default (bf16 here)": [openvino_runner(path, {"INFERENCE_NUM_THREADS": CORES // at_once})
                                                 for _ in range(at_once)]}
    reference = engines["ONNX Runtime"][0](batches[0])
    rows = []
    for name, runners in engines.items():
        difference = float(np.abs(runners[0](batches[0]) - reference).max())
        with ThreadPoolExecutor(at_once) as pool:
            started = time.perf_counter()
            list(pool.map(lambda i: runners[i % at_once](batches[i]), range(len(batches))))
            rows.append((name, len(pixels) / (time.perf_counter() - started), difference))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--images", type=int, default=500, help="validation images to compare on")
    parser.add_argument("--out", type=Path, help="folder for the exports, kept and used again [default: a temporary "
                                                 "one]")
    args = parser.parse_args()
    predictor = Predictor.from_run(args.run)
    paths = read_saved_predictions(args.run, predictor.config).files[: args.images]
    with tempfile.TemporaryDirectory(prefix="vistrain-edge-") as scratch:
        folder = args.out or Path(scratch)
        cache = Path(scratch) / "cache"
        expected = predictor.predict(paths, cache, show_progress=False).outputs.argmax(1)
        images = np.stack([prepare_image(path, predictor.preprocess) for path in paths])
        print(f"{datetime.date.today()}, {cpu()}; run {args.run} ({predictor.config['backbone']['name']}, "
              f"{predictor.preprocess.input_size} px), {len(paths)} validation images\n")
        print("| format | precision | size (MB) | top-1 = predict | 1 image (ms) | batch of 32 (images/s) |")
        print("|---|---|---|---|---|---|")
        for name, precision, path, run in formats(args.run, folder):
            size = export_size(path) / 1e6
            if run is None:
                print(f"| {name} | {precision} | {size:.2f} | (Apple devices only) | | |")
                continue
            outputs = np.concatenate([run(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])
            agreement = np.mean(outputs.argmax(1) == expected)
            latency, throughput = timings(run, images)
            batched = " (batch 1: one after another)" if name == "tflite" else ""
            print(f"| {name} | {precision} | {size:.2f} | {agreement:.1%} | {latency:.1f} | "
                  f"{throughput:.0f}{batched} |")
        print("\n| backbone on decoded pixels | features/s | max difference to ONNX Runtime |")
        print("|---|---|---|")
        for name, speed, difference in feature_engines(predictor, images, cache):
            print(f"| {name} | {speed:.0f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
