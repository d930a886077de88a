"""Benchmark: does vistrain scale linearly in time and flat in memory? Generated images, growing counts.

For each size N, writes N small JPEGs (two classes: circles and squares) and times `vistrain check` and a cold
`vistrain train --epochs 3` (empty feature cache), each in its own process; prints a Markdown table of wall time,
images/s, peak RSS (the largest of the process and its children, from wait4) and the feature cache's size on disk
(the cache also holds the exported backbone), a row as each size finishes.

    python benchmarks/scale.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vistrain.features.cpu import cpu_name, int8_dot_products, resolve_precision


def generate(root: Path, n: int) -> None:
    """n 96x96 JPEGs in root/{circle,square}/: a random shape on random noise, so that they are not near
    duplicates of each other (which `check` would rightly list by the million)."""
    rng = np.random.default_rng(0)
    for kind in ("circle", "square"):
        (root / kind).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        kind = ("circle", "square")[i % 2]
        image = Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
        r, x, y = rng.integers(14, 30), rng.integers(30, 66), rng.integers(30, 66)
        draw = ImageDraw.Draw(image)
        (draw.ellipse if kind == "circle" else draw.rectangle)((x - r, y - r, x + r, y + r),
                                                               fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        image.save(root / kind / f"{i}.jpg", quality=90)


def measured(*args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one `vistrain` command."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vistrain", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"vistrain {' '.join(args)} failed ({status})")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--check-only", action="store_true", help="Time `check` alone.")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {platform.machine()}, {os.cpu_count()} cores, int8 dot products: "
          f"{', '.join(int8_dot_products()) or 'none'}; train's default precision here: {resolve_precision('auto')}")
    print("| images | check (s) | check img/s | check peak RSS (MiB) | train, cold (s) | train img/s "
          "| train peak RSS (MiB) | feature cache on disk (MiB) |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for n in args.sizes:
            data, cache = Path(scratch) / f"images-{n}", Path(scratch) / f"cache-{n}"
            generate(data, n)
            check_s, check_rss = measured("check", str(data), "--out", str(Path(scratch) / f"check-{n}"))
            train_s, train_rss = (float("nan"), float("nan")) if args.check_only else measured(
                "train", str(data), "--out", str(Path(scratch) / f"run-{n}"), "--epochs", "3", "--cache-dir", str(cache))
            cache_mib = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20 if cache.exists() else 0
            print(f"| {n:,} | {check_s:.1f} | {n / check_s:.0f} | {check_rss:.0f} | {train_s:.1f} | {n / train_s:.0f} "
                  f"| {train_rss:.0f} | {cache_mib:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
