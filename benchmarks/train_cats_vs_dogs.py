"""Benchmark: default `vistrain train` on ../shared/datasets/cats-vs-dogs (500 train, 500 val photos).

Runs the command line three times: on a new machine (nothing cached: the backbone is exported to ONNX, once,
and every feature computed), cold (the export cached, no features) and warm (features cached), then
`vistrain inspect` on the warm run. Prints a Markdown table: validation accuracy, wall time of each command,
feature-extraction images/s.

    python benchmarks/train_cats_vs_dogs.py [--data PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"


def timed(*args: str) -> float:
    """Wall time of one `vistrain` command, Python start-up included."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vistrain", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def timed_train(data: Path, out: Path, cache: Path) -> tuple[float, dict]:
    seconds = timed("train", str(data), "--out", str(out), "--cache-dir", str(cache))
    return seconds, json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        first_seconds, first = timed_train(args.data, scratch / "first", scratch / "new-machine")
        (scratch / "cache").mkdir()
        for exported in (scratch / "new-machine").glob("*.onnx"):  # the ONNX export only: no features
            shutil.copy(exported, scratch / "cache")
        cold_seconds, cold = timed_train(args.data, scratch / "cold", scratch / "cache")
        warm_seconds, warm = timed_train(args.data, scratch / "warm", scratch / "cache")
        inspect_seconds = timed("inspect", str(scratch / "warm"), "--cache-dir", str(scratch / "cache"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; data: {args.data}")
    print("| run | val accuracy | wall time (s) | features computed | feature extraction (img/s) |")
    print("|---|---|---|---|---|")
    for name, seconds, metrics in (("first on a new machine (exports the backbone)", first_seconds, first),
                                   ("cold (no features cached)", cold_seconds, cold), ("warm", warm_seconds, warm)):
        rate = metrics["timing"]["features_per_second"]
        print(f"| {name} | {metrics['accuracy']:.4f} | {seconds:.1f} | {metrics['timing']['features_computed']} "
              f"| {f'{rate:.1f}' if rate else '-'} |")
    print(f"| inspect (report included) | - | {inspect_seconds:.1f} | 0 | - |")


if __name__ == "__main__":
    main()
