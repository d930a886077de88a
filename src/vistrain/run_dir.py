"""The run directory: everything a trained model needs, written atomically (never half-written).

    config.json        backbone, preprocessing, classes in index order, task, head, hyper-parameters, versions
    head.safetensors   the trained head's weights (no pickle anywhere)
    backbone.safetensors  with --fine-tune only: the fine-tuned backbone (its SHA-256 is in config.json)
    metrics.json       validation metrics of the best epoch
    history.csv        loss and accuracy per epoch, with its stage (frozen or fine-tune)
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

from vistrain.data import Skipped

CONFIG = "config.json"
WEIGHTS = "head.safetensors"  # written by train.save_weights, read by predict.load_head_weights


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


def read_config(run: str | Path) -> dict:
    path = Path(run) / CONFIG
    if not path.is_file():
        raise RunError(f"{run} is not a vistrain run directory (no {CONFIG})")
    return json.loads(path.read_text())


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file written here, or [] when it does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def read_skipped(run: Path) -> list[Skipped]:
    return [Skipped(Path(row["file"]), row["reason"]) for row in read_csv(run / "skipped.csv")]
