"""Benchmark: the levers for images far from ImageNet, on the elpv solar cells (`vistrain demo`'s fixed split).

Each row trains binary (defective or functional) and multiclass (the four defect-probability levels) with one
setting changed, through `vistrain demo`, one feature cache for all (a row that needs new features pays for them:
its time includes extraction). Printed: validation accuracy, macro F1 and defective recall (binary), accuracy and
macro F1 (multiclass), and the wall time of both runs.

    python benchmarks/elpv_levers.py [--cache-dir DIR] [--rows mlp,logistic,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEVERS = {
    "mlp": ("course head: MLP, Adam, 10 epochs (the train default)", ["--head", "mlp"]),
    "mlp-balanced": ("MLP, --class-weight balanced", ["--head", "mlp", "--class-weight", "balanced"]),
    "linear": ("linear head (dropout -> output), Adam", ["--head", "linear"]),
    "mlp-views": ("MLP, --augment-views 2 (rotation, shift, zoom, flip)", ["--head", "mlp", "--augment-views", "2"]),
    "logistic": ("logistic head: C by CV, multi-class offsets by CV (the demo default)", ["--head", "logistic"]),
    "logistic-stages": ("logistic head, --feature-stages 3,4,5,6", ["--head", "logistic", "--feature-stages",
                                                                    "3,4,5,6"]),
    "mlp-stages": ("MLP, --feature-stages 3,4,5,6", ["--head", "mlp", "--feature-stages", "3,4,5,6"]),
}


def run(task: str, extra: list[str], cache: Path, out: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vistrain", "demo", "--task", task, "--out", str(out), "--cache-dir",
                    str(cache), *extra], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, help="feature cache [default: a temporary one]")
    parser.add_argument("--rows", default=",".join(LEVERS), help="levers to run, comma-separated")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    print("| lever | binary accuracy | binary macro F1 | defective recall | multiclass accuracy | multiclass macro F1 "
          "| wall time, both (s) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache_dir or Path(scratch) / "cache"
        for name in args.rows.split(","):
            title, extra = LEVERS[name]
            binary, seconds_b = run("binary", extra, cache, Path(scratch) / f"{name}-b")
            multi, seconds_m = run("multiclass", extra, cache, Path(scratch) / f"{name}-m")
            print(f"| {title} | {binary['accuracy']:.3f} | {binary['macro_f1']:.3f} | "
                  f"{binary['per_class']['defective']['recall']:.3f} | {multi['accuracy']:.3f} | "
                  f"{multi['macro_f1']:.3f} | {seconds_b + seconds_m:.0f} |", flush=True)


if __name__ == "__main__":
    main()
