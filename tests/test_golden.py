"""Recorded outputs (as torchvision's `expect/` files): the predictions of a small deterministic run, compared with
those recorded in tests/expect/. A change that moves them — preprocessing, features, the head, its training, the
seeding — fails here, even when the model still learns the shapes.

The run is the `run` fixture: the shapes (16 + 8 images per class, made by conftest.py), `--epochs 15 --seed 1`,
fp32 features (the session pins `VISTRAIN_PRECISION=fp32`). When predictions change on purpose, record them again:

    VISTRAIN_REGENERATE_EXPECT=1 python -m pytest tests/test_golden.py

and commit the new file with the change that moved them (the test skips, saying what it wrote).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

EXPECT = Path(__file__).parent / "expect"
TOLERANCE = 1e-4  # probabilities; the ONNX and the torch engine's features give the same ones to 6 decimals


def recorded_form(predictions: Path, data: Path) -> list[dict[str, str]]:
    """predictions.csv's rows, each file named relative to the data folder (the run records absolute paths)."""
    rows = list(csv.DictReader(open(predictions, newline="")))
    for row in rows:
        row["file"] = Path(row["file"]).relative_to(data).as_posix()
    return rows


@pytest.mark.slow
def test_a_small_runs_predictions_are_the_recorded_ones(run: Path, shapes_split: Path):
    assert json.loads((run / "config.json").read_text())["precision"] == "fp32"
    rows = recorded_form(run / "predictions.csv", shapes_split)
    expected_file = EXPECT / "shapes_predictions.csv"
    if os.environ.get("VISTRAIN_REGENERATE_EXPECT") == "1":
        with open(expected_file, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        pytest.skip(f"wrote {expected_file}")
    expected = list(csv.DictReader(open(expected_file, newline="")))
    assert [list(row) for row in rows] == [list(row) for row in expected]  # the same columns
    assert [(r["file"], r["true"], r["predicted"]) for r in rows] == \
           [(r["file"], r["true"], r["predicted"]) for r in expected]
    probabilities = [name for name in expected[0] if name.startswith("prob_")]
    got, want = ([float(r[name]) for r in table for name in probabilities] for table in (rows, expected))
    assert got == pytest.approx(want, abs=TOLERANCE)
