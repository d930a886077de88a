"""torchrun with two CPU processes (gloo): sharded features, DistributedDataParallel head, one run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TRAIN_ARGS

pytestmark = pytest.mark.slow  # every test here trains a model


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


def test_two_processes_fine_tune_like_one(shapes_split: Path, tmp_path: Path):
    from conftest import invoke

    args = ["train", str(shapes_split), *TRAIN_ARGS, "--fine-tune", "1", "--fine-tune-epochs", "1"]
    single = invoke(*args, "--out", tmp_path / "one")
    assert single.exit_code == 0, single.output
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "vistrain",
                             *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two"))
    assert two["timing"]["processes"] == 2 and (tmp_path / "two" / "backbone.safetensors").is_file()
    assert two["best_epoch"] == one["best_epoch"] == 16  # the fine-tune epoch follows the 15 frozen ones
    assert two["accuracy"] == one["accuracy"]
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=0.05)
