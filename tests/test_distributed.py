"""torchrun with two CPU processes (gloo): sharded features, DistributedDataParallel head, one run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TRAIN_ARGS


def test_two_processes_match_one(run: Path, shapes_split: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "vistrain",
                             "train", str(shapes_split), "--out", str(out), *TRAIN_ARGS],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "by rank 0 of 2 processes" in result.stderr
    assert result.stdout.count("confusion matrix") == 1  # rank 0 alone reports
    single = json.loads((run / "metrics.json").read_text())
    double = json.loads((out / "metrics.json").read_text())
    assert double["timing"]["processes"] == 2 and (out / "config.json").is_file()
    assert double["accuracy"] == single["accuracy"]
    assert double["val_loss"] == pytest.approx(single["val_loss"], abs=0.02)
