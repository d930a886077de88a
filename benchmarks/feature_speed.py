"""Benchmark: feature extraction on ../shared/datasets/cats-vs-dogs (1,000 photos), fp32 and int8, ONNX Runtime and torch.

Measures, in one run, for fp32 and int8 in turn: (a) the backbone alone, ONNX Runtime on batches of 32 images
decoded and preprocessed beforehand, both ways: one batch at a time on every core, and as `extract_features` runs it
(several batches at once, see `features.extraction_threads`); (b) `extract_features` end to end with an empty
feature cache (models already exported and quantised). (a) and (b) alternate `--repeats` times (the median counts:
a shared 2-core machine is noisy); then (c) the torch engine once. Prints a Markdown table, images/s each, and (b)
over the faster (a), with the CPU and its int8 dot products in the header.
`--breakdown` instead times each step of a cold extraction alone, in CPU milliseconds per image of one thread
(hashing, decoding before and now, resizing, batching, the backbone in each precision, the cache).
`--generated N [N ...]` instead times N generated JPEGs per size in a child process each, with its peak RSS,
to show that memory is set by the batch size, not the number of images.
`--precision-ab N` instead times the backbone alone on N validation photos, interleaved (each repeat runs every
model in turn): the fp32 export of before issue 17 (dynamic "same" padding), today's static-shape fp32 export and
the int8 model (`--precision int8`, calibrated on 256 seeded training photos), and the int8 features' cosine to fp32.

    python benchmarks/feature_speed.py [--data PATH] [--repeats 3] [--breakdown] [--generated 2000 20000]
                                       [--precision-ab 256]
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
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vistrain.backbones import get_backbone
from vistrain.core.files import sha256_file
from vistrain.data.images import load_pixels, load_rgb
from vistrain.features.cache import FeatureCache
from vistrain.features.cpu import cpu_name, int8_dot_products
from vistrain.features.extract import extract_features, extraction_threads, in_threads
from vistrain.features.int8 import calibration_set, cosines
from vistrain.features.precision import FP32, Precision
from vistrain.features.runtime import INPUT, OPSET, feature_session, pixel_feature_extractor
from vistrain.features.transforms import View

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


def decoded_batches(paths: list[Path], preprocess=BACKBONE.preprocess) -> list[np.ndarray]:
    """Every image as the exported model takes it (uint8, resized and cropped), in batches."""
    transform = View().transform(preprocess)
    return [torch.stack([transform(load_pixels(p)[0], "") for p in paths[i : i + BATCH]]).numpy()
            for i in range(0, len(paths), BATCH)]


def backbone_alone(session, batches: list[np.ndarray], at_once: int) -> float:
    """Seconds to run the backbone on every batch, decoded and preprocessed beforehand, `at_once` at a time."""
    session.run(None, {INPUT: batches[0]})  # warm-up
    started = time.perf_counter()
    for _ in in_threads(batches, lambda batch: session.run(None, {INPUT: batch}), at_once):
        pass
    return time.perf_counter() - started


def end_to_end(paths: list[Path], cache: Path, engine: str, precision: Precision = FP32) -> float:
    """Seconds of `extract_features` on `paths` with no features cached in `cache`."""
    started = time.perf_counter()
    features = extract_features(paths, BACKBONE, BACKBONE.preprocess, cache, BATCH, show_progress=False, engine=engine,
                                precision=precision)
    assert features.computed == len(paths), features.skipped
    return time.perf_counter() - started


def header(n: int, data: Path, repeats: int) -> str:
    return (f"{datetime.now():%Y-%m-%d %H:%M}; CPU: {cpu_name()}, {os.cpu_count()} cores, int8 dot products: "
            f"{', '.join(int8_dot_products()) or 'none'}; {n} photos of {data}; batch {BATCH}; "
            f"median of {repeats} interleaved repeats; load average when printed: {os.getloadavg()[0]:.1f}")


def speed(data: Path, repeats: int) -> None:
    """Backbone alone and end to end with an empty cache, fp32 and int8, interleaved; then the torch engine."""
    paths = sorted(data.glob("*/*/*.jpg"))
    at_once, threads_each = extraction_threads()
    cores = os.cpu_count() or 1
    precisions = {"fp32": FP32, "int8": Precision("int8", calibration_set(sorted((data / "train").glob("*/*.jpg")), 0))}
    seconds = {(name, way): [] for name in precisions for way in ("one batch", "parallel", "end to end")}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sessions = {(name, way): feature_session(BACKBONE, BACKBONE.preprocess, scratch / "exported", threads, precision)
                    for name, precision in precisions.items()
                    for way, threads in (("one batch", cores), ("parallel", threads_each))}
        batches = decoded_batches(paths)
        for repeat in range(repeats):
            for name, precision in precisions.items():
                seconds[name, "one batch"].append(backbone_alone(sessions[name, "one batch"], batches, 1))
                seconds[name, "parallel"].append(backbone_alone(sessions[name, "parallel"], batches, at_once))
                cache = scratch / f"{name}{repeat}"
                shutil.copytree(scratch / "exported", cache)  # the ONNX models only: no features yet
                seconds[name, "end to end"].append(end_to_end(paths, cache, "onnx", precision))
        eager = end_to_end(paths, scratch / "torch", "torch")
    n = len(paths)
    print(header(n, data, repeats))
    print("| features | (a1) backbone alone, one batch at a time on "
          f"{cores} threads (img/s) | (a2) backbone alone, {at_once} batches at once, {threads_each} thread(s) each "
          "(img/s) | (b) extract_features, empty cache (img/s) | (b) / faster (a) (each repeat) |")
    print("|---|---|---|---|---|")
    for name in precisions:
        rate = {way: n / statistics.median(seconds[name, way]) for way in ("one batch", "parallel", "end to end")}
        each = [min(a, b) / c for a, b, c in zip(*(seconds[name, way] for way in ("one batch", "parallel", "end to end")))]
        print(f"| {name} | {rate['one batch']:.1f} | {rate['parallel']:.1f} | {rate['end to end']:.1f} | "
              f"{statistics.median(each):.2f} ({', '.join(f'{r:.2f}' for r in each)}) |")
    print(f"(c) extract_features, torch engine (fp32), empty cache: {n / eager:.1f} img/s")


def cpu_ms(work, items) -> float:
    """Milliseconds of this thread's CPU time per item that `work(item)` takes, the best of 3 passes."""
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        for item in items:
            work(item)
        best = min(best, time.thread_time() - started)
    return 1000 * best / len(items)


def breakdown(data: Path) -> None:
    """Where a cold extraction's CPU time goes, per image: each step alone, on one thread (the two extraction
    threads each do all of it for their batches)."""
    paths = sorted(data.glob("*/*/*.jpg"))
    torch.set_num_threads(1)
    transform, reduce_to = View().transform(BACKBONE.preprocess), BACKBONE.preprocess.resize_size
    arrays = [load_pixels(p)[0] for p in paths]
    crops = [transform(a, "") for a in arrays]
    batches = [torch.stack(crops[i : i + BATCH]).numpy() for i in range(0, len(crops), BATCH)]
    int8 = Precision("int8", calibration_set(sorted((data / "train").glob("*/*.jpg")), 0))
    rows = {"hash (SHA-256, reading the file)": cpu_ms(sha256_file, paths),
            "decode, before: Pillow, then its 4-byte pixels copied to an array": cpu_ms(
                lambda p: np.array(load_rgb(p, reduce_to=reduce_to)), paths),
            "decode, now: load_pixels (libjpeg-turbo straight into the array)": cpu_ms(
                lambda p: load_pixels(p, reduce_to=reduce_to), paths),
            "resize shorter side and centre crop (torch, uint8)": cpu_ms(lambda a: transform(a, ""), arrays),
            "batch stacked": cpu_ms(lambda i: torch.stack(crops[i : i + BATCH]), range(0, len(crops), BATCH)) / BATCH}
    with tempfile.TemporaryDirectory() as scratch:
        for name, precision in (("fp32", FP32), ("int8", int8)):
            session = feature_session(BACKBONE, BACKBONE.preprocess, Path(scratch), 1, precision)
            session.run(None, {INPUT: batches[0]})
            rows[f"backbone {name}, one thread"] = cpu_ms(lambda b: session.run(None, {INPUT: b}), batches) / BATCH
        cache = FeatureCache(Path(scratch), BACKBONE, BACKBONE.preprocess)
        vectors = np.zeros((BATCH, BACKBONE.feature_dim), np.float32)
        digests = [sha256_file(p) for p in paths]
        rows["feature cache: lookup, then a committed write per batch (SQLite)"] = cpu_ms(
            lambda i: cache.has(digests[i : i + BATCH]) and None or cache.put_many(dict(zip(digests[i : i + BATCH],
                                                                                            vectors))),
            range(0, len(paths), BATCH)) / BATCH
        cache.close()
    print(header(len(paths), data, 3).replace("interleaved repeats", "passes, CPU time of one thread"))
    print("| step | ms of CPU per image | share, fp32 | share, int8 |")
    print("|---|---|---|---|")
    shared = [k for k in rows if not k.startswith(("backbone", "decode, before"))]
    totals = {name: sum(rows[k] for k in shared) + rows[f"backbone {name}, one thread"] for name in ("fp32", "int8")}
    for step, ms in rows.items():
        share = {name: "" if step.startswith("decode, before") or (step.startswith("backbone") and name not in step)
                 else f"{100 * ms / totals[name]:.1f}%" for name in totals}
        print(f"| {step} | {ms:.3f} | {share['fp32']} | {share['int8']} |")
    for name, total in totals.items():
        backbone = rows[f"backbone {name}, one thread"]
        print(f"| all of it, {name} | {total:.3f} | backbone / all: {backbone / total:.2f} | |")


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
    parser.add_argument("--breakdown", action="store_true",
                        help="where a cold extraction's CPU time goes per image, step by step, instead")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args.data)
    elif args.precision_ab:
        precision_ab(args.data, args.precision_ab, args.repeats)
    elif args.generated:
        memory(args.generated)
    else:
        speed(args.data, args.repeats)


if __name__ == "__main__":
    main()
