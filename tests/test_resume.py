"""Interruption loses nothing: a training killed with SIGKILL mid-run resumes to the uninterrupted result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import invoke, kill_when, write_class_folders
from vistrain.model.run_dir import CHECKPOINT

pytestmark = pytest.mark.slow  # every test here trains a model

ARGS = ["--epochs", "80", "--batch-size", "4", "--seed", "2"]


def epochs_done(run: Path) -> int:
    try:
        state = torch.load(run / CHECKPOINT, weights_only=True)
        return len(state["stages"].get("frozen", {}).get("history", []))
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


def test_killed_training_resumes_to_the_same_result(tmp_path: Path):
    data = write_class_folders(tmp_path / "data", 20)
    cache = tmp_path / "cache"
    whole = invoke("train", data, "--out", tmp_path / "whole", "--cache-dir", cache, *ARGS)
    assert whole.exit_code == 0, whole.output
    assert not (tmp_path / "whole" / CHECKPOINT).exists()

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "vistrain", "train", str(data), "--out", str(killed),
                                "--cache-dir", str(cache), *ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(process, lambda: epochs_done(killed) >= 3)
    done = epochs_done(killed)
    if not 0 < done < 80:
        pytest.fail(f"could not interrupt the run mid-training (epochs done: {done})")
    assert not (killed / "config.json").exists() and process.returncode == -9

    resumed = invoke("train", "--resume", killed, "--cache-dir", cache)
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {killed} after epoch {done}" in resumed.stderr.replace("\n", "")
    assert not (killed / CHECKPOINT).exists()
    expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    got = json.loads((killed / "metrics.json").read_text())
    for key in ("accuracy", "val_loss", "best_epoch", "confusion_matrix"):
        assert got[key] == expected[key]
    assert (killed / "history.csv").read_text() == (tmp_path / "whole" / "history.csv").read_text()
    assert "is complete" in invoke("train", "--resume", killed).output


def cached_rows(cache: Path) -> int:
    import sqlite3

    total = 0
    for database in cache.glob("features-*.sqlite"):
        try:
            with sqlite3.connect(database, timeout=1) as db:
                total += db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not there yet
            pass
    return total


def test_killed_during_feature_extraction_keeps_the_features_computed(tmp_path: Path):
    data = write_class_folders(tmp_path / "data", 48)
    cache, killed = tmp_path / "cache", tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "vistrain", "train", str(data), "--out", str(killed),
                                "--cache-dir", str(cache), "--epochs", "3"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(process, lambda: cached_rows(cache) > 0)
    kept = cached_rows(cache)
    if not 0 < kept < 96:
        pytest.fail(f"could not interrupt the feature extraction ({kept} of 96 features cached)")
    assert epochs_done(killed) == 0 and not (killed / "config.json").exists()

    resumed = invoke("train", "--resume", killed, "--cache-dir", cache)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((killed / "metrics.json").read_text())["timing"]["features_computed"] == 96 - kept
    assert json.loads((killed / "metrics.json").read_text())["n_images"] == 20
