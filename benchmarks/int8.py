"""Benchmark: `vistrain train` with int8 features (the default on a CPU with int8 dot products) against fp32, on
cats-vs-dogs and elpv: accuracy over several seeds, the features' agreement, and the cold extraction's speed.

For each dataset and seed, trains with default settings twice, fp32 then int8, each with an empty feature cache
(the exported and quantised backbones made first and timed apart, as on a machine that has run vistrain before).
cats-vs-dogs keeps its train/val folders (the seed draws the calibration images and the head's initial weights);
elpv (the demo's data and heads: logistic) is split anew by each seed, binary and multiclass (`vistrain demo --task
...`). Prints a row per run as it finishes, then the means per dataset: accuracy (multiclass: and macro F1), the
int8 validation features' cosine to the fp32 ones, and features/s of the cold runs with their ratio.

    python benchmarks/int8.py [--datasets cats-vs-dogs elpv-binary elpv-multiclass] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

import vistrain
from vistrain.backbones import get_backbone
from vistrain.data.datasets import load_dataset
from vistrain.features.cpu import cpu_name, int8_dot_products
from vistrain.features.extract import extract_features
from vistrain.features.int8 import calibration_set, cosines
from vistrain.features.precision import Precision
from vistrain.features.runtime import feature_session
from vistrain.model.run_dir import read_config, read_saved_predictions

CATS_VS_DOGS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"
BACKBONE = get_backbone("efficientnet_lite0")


def source(dataset: str, seed: int, scratch: Path) -> tuple[Path, dict]:
    """The data argument and keywords of `vistrain.train` for `dataset` and `seed`."""
    if dataset == "cats-vs-dogs":
        return CATS_VS_DOGS, {}
    from vistrain.data.demo import elpv_csv, elpv_root

    task = dataset.removeprefix("elpv-")
    csv = elpv_csv(scratch / f"elpv-{seed}", task, seed=seed)
    return csv, {"image_root": elpv_root(), "task": task, "head": "logistic"}


def run(dataset: str, seed: int, precision: str, scratch: Path) -> dict:
    """Train with `precision` on an empty feature cache (models made first, timed apart)."""
    data, keywords = source(dataset, seed, scratch)
    cache = scratch / f"cache-{dataset}-{seed}-{precision}"
    train = load_dataset(data, image_root=keywords.get("image_root"), task=keywords.get("task", "auto"), seed=seed)
    features = Precision(precision, calibration_set([s.path for s in train.train], seed) if precision == "int8" else ())
    started = time.perf_counter()
    feature_session(BACKBONE, BACKBONE.preprocess, cache, threads=1, precision=features)
    models = time.perf_counter() - started
    started = time.perf_counter()
    result = vistrain.train(data, out=scratch / f"run-{dataset}-{seed}-{precision}", cache_dir=cache,
                            seed=seed, precision=precision, **keywords)
    seconds = time.perf_counter() - started
    files = read_saved_predictions(result.run_dir, read_config(result.run_dir)).files
    vectors = extract_features(files, BACKBONE, BACKBONE.preprocess, cache, show_progress=False,
                               precision=features).vectors  # cached: read back
    shutil.rmtree(cache)
    return {"accuracy": result.metrics["accuracy"], "macro_f1": result.metrics.get("macro_f1", float("nan")),
            "vectors": vectors, "models": models, "seconds": seconds,
            "features_per_second": result.metrics["timing"]["features_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cats-vs-dogs", "elpv-binary", "elpv-multiclass"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    print(f"{datetime.now():%Y-%m-%d %H:%M}; CPU: {cpu_name()}, {os.cpu_count()} cores, int8 dot products: "
          f"{', '.join(int8_dot_products()) or 'none'}; load average at the start: {os.getloadavg()[0]:.1f}")
    print("| data | seed | features | val accuracy | macro F1 | cosine to fp32 (median / 5th pct) "
          "| export + quantisation (s) | train, cold (s) | features/s |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    means = []
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in args.datasets:
            results = {}
            for seed in args.seeds:
                for precision in ("fp32", "int8"):
                    r = results[seed, precision] = run(dataset, seed, precision, Path(scratch))
                    c = cosines(r["vectors"], results[seed, "fp32"]["vectors"])
                    print(f"| {dataset} | {seed} | {precision} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                          f"{np.median(c):.4f} / {np.percentile(c, 5):.4f} | {r['models']:.1f} | {r['seconds']:.1f} | "
                          f"{r['features_per_second']:.1f} |", flush=True)
            means.append((dataset, results))
    print("\n| data | seeds | fp32 accuracy (mean) | int8 accuracy (mean) | int8 - fp32 (points) | macro F1 fp32 / int8 "
          "| features/s fp32 / int8 (median) | int8 / fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset, results in means:
        mean = {p: statistics.mean(results[s, p]["accuracy"] for s in args.seeds) for p in ("fp32", "int8")}
        f1 = {p: statistics.mean(results[s, p]["macro_f1"] for s in args.seeds) for p in ("fp32", "int8")}
        speed = {p: statistics.median(results[s, p]["features_per_second"] for s in args.seeds) for p in ("fp32", "int8")}
        print(f"| {dataset} | {len(args.seeds)} | {mean['fp32']:.4f} | {mean['int8']:.4f} | "
              f"{100 * (mean['int8'] - mean['fp32']):+.2f} | {f1['fp32']:.4f} / {f1['int8']:.4f} | "
              f"{speed['fp32']:.1f} / {speed['int8']:.1f} | {speed['int8'] / speed['fp32']:.2f} |")


if __name__ == "__main__":
    main()
