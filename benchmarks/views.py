"""Benchmark: does augmentation help with a frozen backbone? `train --augment-views K` and `--tta`, measured.

On ../shared/datasets/cats-vs-dogs (500 training, 500 validation photos) and on the elpv demo (binary,
2,099 / 525), trains the default model with no augmentation and with K augmented views per training image,
then scores each on the validation images with and without test-time augmentation (image + mirror). Prints a
Markdown table of validation accuracy and wall times.

    python benchmarks/views.py [--views 2] [--seed 0]
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

CATS_VS_DOGS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"


def vistrain(*args: str) -> tuple[float, str]:
    """(wall seconds, stdout) of one `vistrain` command."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vistrain", *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        cache = ["--cache-dir", str(scratch / "cache")]
        from vistrain.data.demo import elpv_csv, elpv_root

        sources = {"elpv (binary)": ["--labels", str(elpv_csv(scratch, "binary")), "--image-root", str(elpv_root())]}
        if CATS_VS_DOGS.is_dir():
            sources = {"cats-vs-dogs": [str(CATS_VS_DOGS)], **sources}
        for name, source in sources.items():
            for views in (0, args.views):
                out = scratch / f"{name}-{views}".replace(" ", "")
                seconds, _ = vistrain("train", *source, "--out", str(out), "--augment-views", str(views),
                                      "--seed", str(args.seed), *cache)
                scores = {}
                for tta in (False, True):
                    tta_seconds, stdout = vistrain("evaluate", str(out), *source, "--format", "json", *cache,
                                                   *(["--tta"] if tta else []))
                    scores[tta] = (json.loads(stdout)["accuracy"], tta_seconds)
                rows.append((name, views, json.loads((out / "metrics.json").read_text())["accuracy"], seconds, scores))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; seed {args.seed}")
    print("| data | augmented views | val accuracy | with --tta | train wall time (s) | evaluate --tta (s) |")
    print("|---|---|---|---|---|---|")
    for name, views, accuracy, seconds, scores in rows:
        print(f"| {name} | {views} | {accuracy:.4f} | {scores[True][0]:.4f} | {seconds:.1f} | {scores[True][1]:.1f} |")


if __name__ == "__main__":
    main()
