"""Benchmark: each shipped backbone on ../shared/datasets/cats-vs-dogs (500 training, 500 validation photos).

For every backbone: `vistrain train` with an empty feature cache (cold) and again (warm), validation accuracy,
and `predict` throughput on the 500 validation photos with an empty cache (decoding, backbone and head; the
command's start-up excluded). Prints a Markdown table.

    python benchmarks/backbones.py [--backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2]
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

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"
PREDICT_SPEED = """
import sys, time
from pathlib import Path
from vistrain.model.predictor import Predictor, expand_paths
predictor = Predictor.from_run(sys.argv[1])
paths = expand_paths([sys.argv[2]])
started = time.perf_counter()
predictor.predict(paths, Path(sys.argv[3]), show_progress=False)
print(len(paths) / (time.perf_counter() - started))
"""


def timed_train(data: Path, out: Path, cache: Path, backbone: str) -> tuple[float, dict]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vistrain", "train", str(data), "--out", str(out), "--cache-dir", str(cache),
                    "--backbone", backbone], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for backbone in args.backbones.split(","):
            cold, metrics = timed_train(args.data, scratch / backbone / "cold", scratch / backbone / "cache", backbone)
            warm, _ = timed_train(args.data, scratch / backbone / "warm", scratch / backbone / "cache", backbone)
            speed = subprocess.run([sys.executable, "-c", PREDICT_SPEED, str(scratch / backbone / "warm"),
                                    str(args.data / "val"), str(scratch / backbone / "predict-cache")],
                                   check=True, capture_output=True, text=True).stdout.strip()
            rows.append((backbone, metrics["accuracy"], cold, warm, float(speed)))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; data: {args.data}")
    print("| backbone | val accuracy (frozen) | cold train (s) | warm train (s) | predict (img/s) |")
    print("|---|---|---|---|---|")
    for backbone, accuracy, cold, warm, speed in rows:
        print(f"| {backbone} | {accuracy:.4f} | {cold:.1f} | {warm:.1f} | {speed:.1f} |")


if __name__ == "__main__":
    main()
