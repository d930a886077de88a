"""Benchmark: the four tasks of the course's table on the elpv solar-cell photos (PyPI `elpv-dataset`).

Runs `vistrain demo --task T` for binary, multiclass, multilabel and regression: one fixed, seeded split shared
by all four (2,099 training and 525 validation images), the default head and settings, one feature cache (the
first task pays for the features), and prints a Markdown table of each task's validation metrics.

    python benchmarks/elpv_tasks.py [--seed 0] [--class-weight]
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

TASKS = ("binary", "multiclass", "multilabel", "regression")


def headline(task: str, m: dict) -> str:
    """The task's metrics from the course's table, in one cell."""
    if task == "binary":
        recall = m["per_class"]["defective"]["recall"]
        return (f"accuracy {m['accuracy']:.3f} · ROC AUC {m['roc_auc']:.3f} · macro F1 {m['macro_f1']:.3f} · "
                f"defective recall {recall:.3f}")
    if task == "multiclass":
        top = next(key for key in m if key.startswith("top_"))
        name = top.replace("_accuracy", " accuracy").replace("_", "-")
        return f"accuracy {m['accuracy']:.3f} · {name} {m[top]:.3f} · macro F1 {m['macro_f1']:.3f}"
    if task == "multilabel":
        per_label = ", ".join(f"{name} {v['f1']:.3f}" for name, v in m["per_label"].items())
        return (f"micro F1 {m['micro_f1']:.3f} · macro F1 {m['macro_f1']:.3f} · mAP {m['mean_average_precision']:.3f}"
                f" · F1 per label: {per_label}")
    return f"MAE {m['mae']:.3f} · RMSE {m['rmse']:.3f} · R² {m['r2']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class-weight", action="store_true", help="Also pass --class-weight balanced "
                        "(classification tasks).")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for task in TASKS:
            out = scratch / task
            extra = ["--class-weight", "balanced"] if args.class_weight and task != "regression" else []
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "vistrain", "demo", "--task", task, "--out", str(out),
                            "--cache-dir", str(scratch / "cache"), "--seed", str(args.seed), *extra],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - started
            metrics = json.loads((out / "metrics.json").read_text())
            rows.append((task, metrics, seconds))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; seed {args.seed}"
          + ("; --class-weight balanced" if args.class_weight else ""))
    print("| task | validation metrics (525 images) | best epoch | wall time (s) | features computed |")
    print("|---|---|---|---|---|")
    for task, metrics, seconds in rows:
        print(f"| {task} | {headline(task, metrics)} | {metrics['best_epoch']} | {seconds:.1f} "
              f"| {metrics['timing']['features_computed']} |")


if __name__ == "__main__":
    main()
