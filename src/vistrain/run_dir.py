"""The run directory: everything a trained model needs, written atomically (never half-written).

    config.json        backbone, preprocessing, classes in index order, task, head, hyper-parameters, versions
    head.safetensors   the trained head's weights (no pickle anywhere)
    metrics.json       validation metrics of the best epoch
    history.csv        loss and accuracy per epoch
    predictions.csv    validation images: file, true class, predicted class, probability per class
    skipped.csv        files left out, with the reason
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vistrain.data import Skipped

CONFIG = "config.json"
WEIGHTS = "head.safetensors"


class RunError(ValueError):
    """The run directory is missing or incomplete."""


def new_run_dir(out: str | Path | None, overwrite: bool = False) -> Path:
    """Create the run directory: `out`, or runs/<timestamp>. An existing non-empty one needs `overwrite`."""
    path = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise RunError(f"{path} already holds files; choose another --out or pass --overwrite")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: dict) -> None:
    write_atomic(path, (json.dumps(value, indent=2) + "\n").encode())


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue().encode())


def write_skipped(path: Path, skipped: list[Skipped]) -> None:
    write_csv(path, ["file", "reason"], [[str(s.path), s.reason] for s in skipped])


def save_head(run: Path, head: nn.Module) -> None:
    handle, temporary = tempfile.mkstemp(dir=run, prefix=f".{WEIGHTS}.")
    os.close(handle)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, temporary)
    os.replace(temporary, run / WEIGHTS)


def read_config(run: str | Path) -> dict:
    path = Path(run) / CONFIG
    if not path.is_file():
        raise RunError(f"{run} is not a vistrain run directory (no {CONFIG})")
    return json.loads(path.read_text())


def load_head_weights(run: str | Path) -> dict[str, torch.Tensor]:
    path = Path(run) / WEIGHTS
    if not path.is_file():
        raise RunError(f"{run} has no {WEIGHTS}")
    return load_file(path)
