"""Benchmark: feature extraction on ../shared/datasets/cats-vs-dogs (1,000 photos), ONNX Runtime and torch.

Measures, in one run: (a) the backbone alone, ONNX Runtime on batches of 32 images decoded and preprocessed
beforehand, both ways: one batch at a time on every core, and as `extract_features` runs it (several batches at
once, see `features.extraction_threads`); (b) `extract_features` end to end with an empty feature cache (ONNX
engine, model already exported); (c) the same with the torch engine. (a) and (b) alternate `--repeats` times
(the median counts: a shared 2-core machine is noisy). Prints a Markdown table, images/s each, and (b) over the
faster (a).
`--generated N [N ...]` instead times N generated JPEGs per size in a child process each, with its peak RSS,
to show that memory is set by the batch size, not the number of images.
`--precision-ab N` instead times the backbone alone on N validation photos, interleaved (each repeat runs every
model in turn): the fp32 export of before issue 17 (dynamic "same" padding), today's static-shape fp32 export and
the int8 model (`--precision int8`, calibrated on 256 seeded training photos), and the int8 features' cosine to fp32.

    python benchmarks/feature_speed.py [--data PATH] [--repeats 3] [--generated 2000 20000] [--precision-ab 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vistrain.backbones import get_backbone
from vistrain.features.extract import extract_features, extraction_threads, in_threads
from vistrain.data.images import load_rgb
from vistrain.features.cpu import int8_dot_products
from vistrain.features.int8 import Precision, calibration_set, cosines
from vistrain.features.runtime import INPUT, OPSET, feature_session, pixel_feature_extractor
from vistrain.features.transforms import eval_transform

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"
BACKBONE = get_backbone("efficientnet_lite0")
BATCH = 32

MEASURE_CHILD = """
import resource, sys, time
from pathlib import Path
from vistrain.backbones import get_backbone
from vistrain.features.extract import extract_features
paths = sorted(Path(sys.argv[1]).glob("*.jpg"))
backbone = get_backbone("efficientnet_lite0")
started = time.perf_counter()
extract_features(paths, backbone, backbone.preprocess, Path(sys.argv[2]), show_progress=False)
seconds = time.perf_counter() - started
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def decoded_batches(paths: list[Path]) -> list[np.ndarray]:
    """Every image as the exported model takes it (uint8, resized and cropped), in batches."""
    transform = eval_transform(BACKBONE.preprocess, output="uint8")
    return [torch.stack([transform(load_rgb(p)) for p in paths[i : i + BATCH]]).numpy()
            for i in range(0, len(paths), BATCH)]


def backbone_alone(session, batches: list[np.ndarray], at_once: int) -> float:
    """Seconds to run the backbone on every batch, decoded and preprocessed beforehand, `at_once` at a time."""
    session.run(None, {INPUT: batches[0]})  # warm-up
    started = time.perf_counter()
    for _ in in_threads(batches, lambda batch: session.run(None, {INPUT: batch}), at_once):
        pass
    return time.perf_counter() - started


def end_to_end(paths: list[Path], cache: Path, engine: str) -> float:
    """Seconds of `extract_features` on `paths` with no features cached in `cache`."""
    started = time.perf_counter()
    features = extract_features(paths, BACKBONE, BACKBONE.preprocess, cache, BATCH, show_progress=False, engine=engine)
    assert features.computed == len(paths), features.skipped
    return time.perf_counter() - started


def speed(data: Path, repeats: int) -> None:
    paths = sorted(data.glob("*/*/*.jpg"))
    at_once, threads_each = extraction_threads()
    cores = os.cpu_count() or 1
    one_batch, parallel, onnx = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        all_cores = feature_session(BACKBONE, BACKBONE.preprocess, scratch / "exported", threads=cores)
        export_seconds = time.perf_counter() - started
        shared = feature_session(BACKBONE, BACKBONE.preprocess, scratch / "exported", threads=threads_each)
        batches = decoded_batches(paths)
        for repeat in range(repeats):
            one_batch.append(backbone_alone(all_cores, batches, 1))
            parallel.append(backbone_alone(shared, batches, at_once))
            shutil.copytree(scratch / "exported", scratch / f"onnx{repeat}")  # the ONNX model only: no features yet
            onnx.append(end_to_end(paths, scratch / f"onnx{repeat}", "onnx"))
        eager = end_to_end(paths, scratch / "torch", "torch")
    n = len(paths)
    print(f"machine: {platform.machine()}, {cores} cores; data: {data} ({n} photos); batch {BATCH}; "
          f"ONNX export (once): {export_seconds:.1f} s; median of {repeats} for (a) and (b)")
    print("| measurement | seconds | images/s |")
    print("|---|---|---|")
    rows = ((f"(a1) backbone alone, ONNX Runtime, one batch at a time on {cores} threads", one_batch),
            (f"(a2) backbone alone, ONNX Runtime, {at_once} batches at once, {threads_each} thread(s) each", parallel),
            ("(b) extract_features, ONNX engine, empty cache (decoding included)", onnx),
            ("(c) extract_features, torch engine, empty cache", [eager]))
    for name, seconds in rows:
        print(f"| {name} | {statistics.median(seconds):.1f} | {n / statistics.median(seconds):.1f} |")
    best_alone = [min(a, b) for a, b in zip(one_batch, parallel)]
    print(f"(b) / faster (a): {statistics.median(best_alone) / statistics.median(onnx):.2f} "
          f"(each repeat: {', '.join(f'{a / b:.2f}' for a, b in zip(best_alone, onnx))})")


def generate(folder: Path, n: int) -> None:
    """`n` random 320x240 JPEGs: colour blocks with noise, a few kB each."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        blocks = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((320, 240))
        noisy = np.asarray(blocks) + rng.integers(0, 30, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:06d}.jpg", quality=85)


def memory(sizes: list[int]) -> None:
    print("| images | seconds | images/s | peak RSS (MiB) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        feature_session(BACKBONE, BACKBONE.preprocess, scratch / "exported", threads=1)
        for n in sizes:
            generate(scratch / f"images{n}", n)
            shutil.copytree(scratch / "exported", scratch / f"cache{n}")  # the ONNX model only: no features yet
            output = subprocess.run([sys.executable, "-c", MEASURE_CHILD, scratch / f"images{n}", scratch / f"cache{n}"],
                                    check=True, capture_output=True, text=True).stdout
            seconds, peak_kib = (float(x) for x in output.split())
            print(f"| {n} | {seconds:.1f} | {n / seconds:.1f} | {peak_kib / 1024:.0f} |")


def dynamic_session(path: Path, threads: int):
    """A session of the fp32 export as it was before issue 17: the "same" padding computed in the graph."""
    import onnxruntime

    example = torch.zeros(2, 3, BACKBONE.preprocess.input_size, BACKBONE.preprocess.input_size, dtype=torch.uint8)
    with torch.no_grad():
        torch.onnx.export(pixel_feature_extractor(BACKBONE, BACKBONE.preprocess), (example,), path, dynamo=False,
                          opset_version=OPSET, input_names=[INPUT], output_names=["features"],
                          dynamic_axes={INPUT: {0: "batch"}, "features": {0: "batch"}})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def precision_ab(data: Path, n: int, repeats: int) -> None:
    """fp32 dynamic, fp32 static and int8, backbone alone on `n` validation photos, interleaved."""
    cores = os.cpu_count() or 1
    paths = sorted((data / "val").glob("*/*.jpg"))[:: max(1, len(sorted((data / "val").glob("*/*.jpg"))) // n)][:n]
    calibration = calibration_set(sorted((data / "train").glob("*/*.jpg")), 0)
    with tempfile.TemporaryDirectory() as scratch:
        sessions = {"fp32, dynamic padding (before)": dynamic_session(Path(scratch) / "dynamic.onnx", cores),
                    "fp32, static shape": feature_session(BACKBONE, BACKBONE.preprocess, Path(scratch), cores),
                    "int8": feature_session(BACKBONE, BACKBONE.preprocess, Path(scratch), cores,
                                            Precision("int8", calibration))}
        batches = decoded_batches(paths)
        seconds = {name: [] for name in sessions}
        for _ in range(repeats):
            for name, session in sessions.items():
                seconds[name].append(backbone_alone(session, batches, 1))
        vectors = {name: np.concatenate([s.run(None, {INPUT: b})[0] for b in batches]) for name, s in sessions.items()}
    base = statistics.median(seconds["fp32, dynamic padding (before)"])
    print(f"machine: {platform.machine()}, {cores} cores, int8 dot products (VNNI): {int8_dot_products()}; "
          f"{len(paths)} photos of {data / 'val'}; batch {BATCH}, one batch at a time on {cores} threads; "
          f"median of {repeats} interleaved repeats; load average before: {os.getloadavg()[0]:.1f}")
    print("| backbone (Lite0) | images/s | speed-up over before | cosine to fp32 static (median / min) |")
    print("|---|---|---|---|")
    for name in sessions:
        c = cosines(vectors[name], vectors["fp32, static shape"])
        print(f"| {name} | {len(paths) / statistics.median(seconds[name]):.1f} | "
              f"{base / statistics.median(seconds[name]):.2f} | {np.median(c):.4f} / {c.min():.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3, help="times (a) and (b) are measured, alternating")
    parser.add_argument("--generated", type=int, nargs="+", metavar="N",
                        help="time and peak memory on N generated JPEGs instead, for each N")
    parser.add_argument("--precision-ab", type=int, metavar="N",
                        help="fp32 dynamic vs fp32 static vs int8 on N validation photos instead")
    args = parser.parse_args()
    if args.precision_ab:
        precision_ab(args.data, args.precision_ab, args.repeats)
    elif args.generated:
        memory(args.generated)
    else:
        speed(args.data, args.repeats)


if __name__ == "__main__":
    main()
