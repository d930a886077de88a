"""Interruption loses nothing: a training killed with SIGKILL mid-run resumes to the uninterrupted result."""

from __future__ import annotations

import json
import shutil
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
        return len(state["phases"].get("frozen", {}).get("history", []))
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

    older = Path(shutil.copytree(killed, tmp_path / "older"))
    as_format_2(older / CHECKPOINT)

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
    resumed = invoke("train", "--resume", older, "--cache-dir", cache)  # a checkpoint from before phases
    assert resumed.exit_code == 0, resumed.output
    assert (older / "history.csv").read_text() == (tmp_path / "whole" / "history.csv").read_text()


def as_format_2(path: Path) -> None:
    """Rewrite a checkpoint as vistrain wrote it before 2026-12-04: format 2, its phases called "stages", each best
    epoch's phase its "stage"."""
    state = torch.load(path, weights_only=True)
    phases = state.pop("phases")
    for phase in phases.values():
        phase["best"]["stage"] = phase["best"].pop("phase")
    torch.save({**state, "format": 2, "stages": phases}, path)


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

    older = Path(shutil.copytree(killed, tmp_path / "older"))
    as_format_2(older / CHECKPOINT)

    resumed = invoke("train", "--resume", killed, "--cache-dir", cache)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((killed / "metrics.json").read_text())["timing"]["features_computed"] == 96 - kept
    assert json.loads((killed / "metrics.json").read_text())["n_images"] == 20


def test_a_checkpoint_from_before_phases_reads_as_phases(tmp_path: Path):
    from vistrain.training.checkpoint import Checkpoint, load_checkpoint

    best = {"loss": 0.25, "phase": "frozen", "epoch": 2, "weights": None, "outputs": None}
    saved = Checkpoint(tmp_path, {"data": "x", "options": {}})
    saved.save_phase("frozen", {"history": [[1, 0.5, 0.8, 0.4, 0.9]], "best": best})
    as_format_2(tmp_path / CHECKPOINT)
    assert "phases" not in torch.load(tmp_path / CHECKPOINT, weights_only=True)
    loaded = load_checkpoint(tmp_path)
    assert loaded.phase("frozen")["best"]["phase"] == "frozen" and loaded.phase("fine-tune") is None
    assert loaded.state["job"] == {"data": "x", "options": {}}
