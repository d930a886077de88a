"""Benchmark: int8 features against fp32 on cats-vs-dogs and elpv: accuracy, agreement and speed.

For each dataset, trains with default settings three times, each with an empty feature cache: fp32; int8 as
vistrain computes it (`--precision int8`; on a CPU without VNNI with exact accumulation, `session.x64quantprecision`);
and int8 with ONNX Runtime's default kernels, which vistrain refuses on such CPUs (this script switches the refusal
off to show why). Prints a Markdown table: validation accuracy, the int8 validation features' cosine to the fp32
ones (median and 5th percentile), the one-off export and quantisation (timed apart, before training), and the
cold training run's seconds and features/s.

    python benchmarks/int8.py [--datasets cats-vs-dogs elpv]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import vistrain
from vistrain.backbones import get_backbone
from vistrain.data.datasets import load_dataset
from vistrain.features import int8, runtime
from vistrain.features.extract import extract_features
from vistrain.features.cpu import int8_dot_products
from vistrain.features.int8 import Precision, calibration_set, cosines
from vistrain.model.run_dir import read_config, read_saved_predictions

CATS_VS_DOGS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"
VARIANTS = ("fp32", "int8", "int8, default kernels")
BACKBONE = get_backbone("efficientnet_lite0")


def source(dataset: str, scratch: Path) -> tuple[Path, dict]:
    """The data argument and keywords of `vistrain.train` for `dataset`."""
    if dataset == "cats-vs-dogs":
        return CATS_VS_DOGS, {}
    from vistrain.data.demo import elpv_csv, elpv_root

    return elpv_csv(scratch / "datasets", "binary"), {"image_root": elpv_root(), "task": "binary"}


def run(dataset: str, variant: str, scratch: Path) -> dict:
    """Train `variant` on `dataset` with an empty cache (its ONNX models made first, timed apart); its accuracy,
    validation features and timings."""
    data, keywords = source(dataset, scratch)
    cache = scratch / f"cache-{dataset}-{variant}"
    train = load_dataset(data, image_root=keywords.get("image_root"), task=keywords.get("task", "auto")).train
    name = variant.split(",")[0]
    precision = Precision(name, calibration_set([s.path for s in train], 0) if name == "int8" else ())
    configure, floor = runtime.configure, int8.MIN_COSINE
    if variant == "int8, default kernels":  # what vistrain refuses on a CPU without VNNI: shown, never used
        runtime.configure, int8.MIN_COSINE = (lambda options: None), -1.0
    try:
        started = time.perf_counter()
        runtime.feature_session(BACKBONE, BACKBONE.preprocess, cache, threads=1, precision=precision)
        models = time.perf_counter() - started
        started = time.perf_counter()
        result = vistrain.train(data, scratch / f"run-{dataset}-{variant}", cache_dir=cache, verbose=False,
                                precision=name, **keywords)
        seconds = time.perf_counter() - started
        files = read_saved_predictions(result.run_dir, read_config(result.run_dir)).files
        vectors = extract_features(files, BACKBONE, BACKBONE.preprocess, cache, show_progress=False,
                                   precision=precision).vectors  # cached: read back
    finally:
        runtime.configure, int8.MIN_COSINE = configure, floor
    return {"accuracy": result.metrics["accuracy"], "vectors": vectors, "models": models, "seconds": seconds,
            "features_per_second": result.metrics["timing"]["features_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cats-vs-dogs", "elpv"])
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, int8 dot products: {int8_dot_products()}")
    print("| data | features | val accuracy | cosine to fp32 (median / 5th pct) | export + quantisation (s) "
          "| train, cold (s) | features/s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in args.datasets:
            results = {variant: run(dataset, variant, Path(scratch)) for variant in VARIANTS}
            for variant, r in results.items():
                c = cosines(r["vectors"], results["fp32"]["vectors"])
                print(f"| {dataset} | {variant} | {r['accuracy']:.4f} | {np.median(c):.4f} / "
                      f"{np.percentile(c, 5):.4f} | {r['models']:.1f} | {r['seconds']:.1f} | "
                      f"{r['features_per_second']:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
