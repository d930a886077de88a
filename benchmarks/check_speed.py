"""Benchmark: `vistrain check` on 500, 1,000 and 2,000 real photos (../shared/datasets), time and peak memory.

The photos are linked (not copied) into a temporary train/val tree. Prints a Markdown table.

    python benchmarks/check_speed.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def photos() -> list[tuple[str, Path]]:
    """(class, path) for the 2,000 photos of both shared folders."""
    found = [(p.parent.name, p) for p in sorted((SHARED / "cats-vs-dogs").glob("*/*/*.jpg"))]
    found += [(p.name.split(".")[0], p) for p in sorted((SHARED / "dogs-vs-cats-flat").glob("*.jpg"))]
    return found


def run_check(items: list[tuple[str, Path]], scratch: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one `vistrain check` in a child process."""
    root = scratch / f"data{len(items)}"
    for i, (label, path) in enumerate(items):
        target = root / ("train" if i % 5 else "val") / label / f"{i}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, target)
    command = [sys.executable, "-c", "import resource, sys; from vistrain.cli import main; sys.argv = sys.argv[1:];"
               "\ntry: main()\nexcept SystemExit: pass\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
               "vistrain", "check", str(root), "--out", str(scratch / f"out{len(items)}")]
    started = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - started, int(output.strip().splitlines()[-1]) / 1024


def main() -> None:
    everything = photos()
    print("| images | wall time (s) | images/s | peak RSS (MiB) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for n in (500, 1000, len(everything)):
            seconds, rss = run_check(everything[:: len(everything) // n][:n], Path(scratch))
            print(f"| {n} | {seconds:.1f} | {n / seconds:.0f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
