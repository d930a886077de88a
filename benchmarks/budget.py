"""Benchmark: `vistrain train` by default and with `--budget`, against fastai's `vision_learner(...).fine_tune` with
the same EfficientNet-Lite0 weights, resolution and wall time, one table per dataset.

Datasets (each with a fixed split):
- cats-vs-dogs: ../shared/datasets/cats-vs-dogs (500 training, 500 validation photos);
- elpv-binary, elpv-multiclass: the demo's solar cells (2,099 training, 525 validation; `vistrain demo --task`);
- digits: scikit-learn's `load_digits` (1,797 grey 8 x 8 images, 10 classes), written as PNG class folders, split
  80/20 per class with seed 0 (1,437 training, 360 validation); anchored by an RBF SVM on the raw pixels of the
  same split (C and gamma by 5-fold cross-validation on the training images);
- elpv-32: the elpv binary cells downscaled to 32 x 32 px (bicubic), same split.

Every vistrain row starts with an empty feature cache (the backbone's ONNX exports copied in, as on a machine
that has run vistrain before), so its seconds include the feature pass; the seconds are the command's wall time,
Python start-up included. The fastai rows run `benchmarks/fastai_peer.py` in its own virtual environment
(see there) at the resolution vistrain chose and for the budget's wall time.

    python benchmarks/budget.py [--datasets cats-vs-dogs,elpv-binary,...] [--budgets 2m,10m] [--fastai 10m]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from vistrain.backbones import get_backbone
from vistrain.training.resolution import data_preprocess, median_side

sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS = ("cats-vs-dogs", "elpv-binary", "elpv-multiclass", "digits", "elpv-32")
SMALL = ("digits", "elpv-32")


def cpu() -> str:
    """The CPU's name, cores and the flags that matter here."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if "flags" in text else set()
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
             if f in flags]
    return f"{name.group(1) if name else 'unknown CPU'}, {os.cpu_count()} cores ({', '.join(shown)})"


def digits_folder(root: Path) -> tuple[Path, float]:
    """load_digits as train/ and val/ PNG class folders (grey levels 0-16 scaled to 0-255), and the validation
    accuracy of an RBF SVM on the raw pixels of the same split."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.svm import SVC

    digits = load_digits()
    train, val = train_test_split(np.arange(len(digits.target)), test_size=0.2, stratify=digits.target,
                                  random_state=0)
    for split, rows in (("train", train), ("val", val)):
        for i in rows:
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.uint8(np.round(digits.images[i] * 255 / 16))).save(folder / f"{i:04d}.png")
    pixels = digits.data / 16
    search = GridSearchCV(SVC(kernel="rbf"), {"C": [1, 3, 10, 30], "gamma": ["scale", 0.01, 0.03, 0.1]}, cv=5)
    search.fit(pixels[train], digits.target[train])
    return root, float((search.predict(pixels[val]) == digits.target[val]).mean())


def elpv_folder(root: Path, task: str, size: int | None = None) -> Path:
    """The demo's split of the elpv cells as train/ and val/ class folders: links to the package's images, or
    copies downscaled to `size` px."""
    from PIL import Image

    from vistrain.data.demo import elpv_csv, elpv_root

    csv_path = elpv_csv(root / "csv", task)
    rows = [line.split(",") for line in csv_path.read_text().splitlines()[1:]]
    for name, label, split in rows:
        folder = root / "images" / split / label
        folder.mkdir(parents=True, exist_ok=True)
        source, target = elpv_root() / name, folder / Path(name).name
        if size:
            with Image.open(source) as image:
                image.convert("L").resize((size, size), Image.Resampling.BICUBIC).save(target)
        else:
            target.symlink_to(source)
    return root / "images"


def vistrain_row(data: Path, budget: str | None, scratch: Path, exports: Path) -> dict:
    """`vistrain train DATA [--budget B]` with an empty feature cache (the ONNX exports copied in)."""
    cache = scratch / f"cache-{budget or 'default'}"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    for exported in exports.glob("*.onnx"):
        shutil.copy(exported, cache)
    out = scratch / f"run-{budget or 'default'}"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vistrain", "train", str(data), "--out", str(out), "--overwrite",
                           "--cache-dir", str(cache), *(["--budget", budget] if budget else [])],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    for exported in cache.glob("*.onnx"):  # keep new exports (e.g. the lower stages at a new size) for later rows
        if not (exports / exported.name).exists():
            shutil.copy(exported, exports)
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    board = out / "leaderboard.csv"
    leaderboard = list(csv.DictReader(board.open())) if board.exists() else []
    return {"leaderboard": leaderboard, "row": f"vistrain {'--budget ' + budget if budget else 'default'}", "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"], "seconds": seconds,
            "chosen": config.get("budget", {}).get("chosen", f"{config['head']['kind']} head (no budget)") + epochs_run(config),
            "size": config["preprocess"]["input_size"]}


def epochs_run(config: dict) -> str:
    """", N of M epochs" for a chosen fine-tuned candidate (config.json's `fine_tune`), else ""."""
    tuned = config.get("fine_tune") or {}
    return f", {tuned['epochs_run']} of {tuned['epochs_planned']} epochs" if "epochs_run" in tuned else ""


def fastai_row(data: Path, size: int, budget: str) -> dict:
    from fastai_peer import run_fastai_peer

    from vistrain.training.options import parse_duration

    result = run_fastai_peer(data, size, parse_duration(budget))
    macro = result.get("macro_f1")
    return {"row": f"fastai fine_tune, {budget}", "accuracy": result["accuracy"],
            "macro_f1": macro if macro is not None else float("nan"), "seconds": result["seconds"],
            "chosen": f"{result['unfrozen_epochs']} unfrozen epoch(s) after 1 frozen", "size": size}


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def metric(row: dict, prefix: str) -> str:
    """A leaderboard row's held-out (`selection_`) or validation (`validation_`) metric."""
    return next(value for key, value in row.items() if key.startswith(prefix) and key != "selection_loss")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--budgets", default="2m,10m", help="budgets for every dataset (small images: also 3m; '' "
                        "for none but that)")
    parser.add_argument("--fastai", default="10m", help="budgets fastai runs for ('' for none; small images: 3m)")
    args = parser.parse_args()
    print(f"{datetime.now():%Y-%m-%d %H:%M}; {cpu()}")
    with tempfile.TemporaryDirectory(prefix="vistrain-budget-") as scratch:
        scratch = Path(scratch)
        exports = scratch / "exports"
        exports.mkdir()
        for name in args.datasets.split(","):
            work = scratch / name
            anchor = ""
            if name == "cats-vs-dogs":
                data = SHARED / "cats-vs-dogs"
            elif name == "digits":
                data, svm = digits_folder(work / "data")
                anchor = f"; RBF SVM on the raw pixels: accuracy {svm:.4f}"
            else:
                task = "multiclass" if name == "elpv-multiclass" else "binary"
                data = elpv_folder(work / "data", task, 32 if name == "elpv-32" else None)
            budgets = [b for b in args.budgets.split(",") if b] + (["3m"] if name in SMALL else [])
            fastai = [b for b in args.fastai.split(",") if b] + (["3m"] if name in SMALL and args.fastai else [])
            print(f"\n### {name}{anchor} (load average at the start: {load()})")
            print("| run | accuracy | macro F1 | seconds | chosen | px |")
            print("|---|---|---|---|---|---|")
            rows = [lambda: vistrain_row(data, None, work, exports)]
            rows += [lambda b=b: vistrain_row(data, b, work, exports) for b in dict.fromkeys(budgets)]
            boards = []
            for make in rows:
                row = make()
                print(f"| {row['row']} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} | {row['seconds']:.0f} | "
                      f"{row['chosen']} | {row['size']} |", flush=True)
                if row["leaderboard"]:
                    boards.append((row["row"], row["leaderboard"]))
            files = sorted((data / "train").glob("*/*"))  # the resolution vistrain fine-tunes at
            size = data_preprocess(get_backbone("efficientnet_lite0").preprocess, median_side(files)).input_size
            for budget in dict.fromkeys(fastai):
                row = fastai_row(data, size, budget)
                print(f"| {row['row']} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} | {row['seconds']:.0f} | "
                      f"{row['chosen']} | {row['size']} |", flush=True)
            for name_of_run, board in boards:  # held-out / validation metric, seconds, and why one was not tried
                print(f"\nleaderboard of {name_of_run}: " + "; ".join(
                    f"{r['candidate']}{' (chosen)' if r['chosen'] else ''} {metric(r, 'selection_') or '-'} / "
                    f"{metric(r, 'validation_') or '-'} ({r['seconds']} s)" + (f" [{r['note']}]" if r['note'] else "")
                    for r in board))
            print(f"(load average at the end: {load()})")


if __name__ == "__main__":
    main()
