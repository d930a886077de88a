"""The run directory's files, listed in one place (model/run_dir.py): `train --overwrite` removes all of them, the
exports and `inspect`'s lists included, folders whole, and nothing of the user's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import invoke
from vistrain.core import files
from vistrain.deploy.formats import FORMATS, MissingExtra
from vistrain.model.run_dir import EXPORTS, RunError, new_run_dir, read_config

TRAINED = ["config.json", "head.safetensors", "backbone.safetensors", "metrics.json", "history.csv", "predictions.csv",
           "skipped.csv", "report.html", "checkpoint.pt"]
INSPECTED = ["inspect_most_confident.csv", "inspect_least_confident.csv", "inspect_confidently_wrong.csv",
             "inspect_label_errors.csv", "inspect_largest_errors.csv"]
EXPORTED_FILES = ["model.onnx", "model-int8.onnx", "model.pt", "model.tflite", "model-int8.tflite"]
EXPORTED_FOLDERS = ["model.mlpackage", "model-int8.mlpackage", "model_openvino", "model-int8_openvino"]
KILLED = [".config.json.k2j4.tmp", ".model.onnx.x81q.tmp", ".inspect_most_confident.csv.a1b2.tmp",
          ".model_openvino.3kd9.old", ".model.mlpackage.removed"]  # what killed writes and removals leave
USERS = ["notes.txt", "model-int8.pt", "my-inspect_most_confident.csv", "model_openvino.zip", "exports"]


def planted(run: Path) -> Path:
    """A run directory holding every file and folder a run can hold, and files of the user's."""
    run.mkdir()
    for name in TRAINED + INSPECTED + EXPORTED_FILES + KILLED[:3] + USERS[:4]:
        (run / name).write_text(name)
    for name in EXPORTED_FOLDERS + KILLED[3:] + USERS[4:]:
        (run / name / "inner").mkdir(parents=True)
        (run / name / "inner" / "weights.bin").write_text(name)
    return run


def test_overwrite_removes_every_run_file_and_folder_and_nothing_of_the_users(tmp_path: Path):
    run = planted(tmp_path / "run")
    with pytest.raises(RunError, match="pass overwrite"):
        new_run_dir(run)
    new_run_dir(run, overwrite=True)
    assert sorted(os.listdir(run)) == sorted(USERS)
    assert (run / "exports" / "inner" / "weights.bin").read_text() == "exports"


def test_every_export_format_has_its_default_names_in_the_schema(tmp_path: Path):
    assert list(EXPORTS) == list(FORMATS)
    defaults = {FORMATS[name].default_path(tmp_path, int8).name for name, int8 in
                [(name, False) for name in FORMATS] + [(name, True) for name in FORMATS if FORMATS[name].int8]}
    assert defaults == set(EXPORTED_FILES + EXPORTED_FOLDERS)


def test_a_kill_while_a_folder_is_removed_leaves_no_half_folder_nor_a_complete_run(tmp_path: Path, monkeypatch):
    run = planted(tmp_path / "run")
    rmtree = shutil.rmtree

    def killed(path, ignore_errors=False, **kwargs):
        if not ignore_errors and Path(path).name == ".model_openvino.removed":
            raise KeyboardInterrupt  # as a kill between the rename and the deletion
        return rmtree(path, ignore_errors=ignore_errors, **kwargs)

    monkeypatch.setattr(files.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        new_run_dir(run, overwrite=True)
    assert not (run / "model_openvino").exists() and (run / ".model_openvino.removed" / "inner").is_dir()
    with pytest.raises(RunError, match="not a vistrain run directory"):
        read_config(run)  # config.json goes first: what is left never passes for a run
    monkeypatch.setattr(files.shutil, "rmtree", rmtree)
    new_run_dir(run, overwrite=True)  # the next overwrite finishes the job
    assert sorted(os.listdir(run)) == sorted(USERS)


def available_exports() -> list[tuple[str, bool]]:
    """(format, int8) for every export this environment can write."""
    found = []
    for name, chosen in FORMATS.items():
        try:
            chosen.require()
        except MissingExtra:
            continue
        found += [(name, False)] + ([(name, True)] if chosen.int8 else [])
    return found


@pytest.mark.slow
def test_overwrite_after_exports_and_inspect_leaves_no_file_of_the_old_run(run: Path, shapes_split: Path,
                                                                           tmp_path: Path):
    old = Path(shutil.copytree(run, tmp_path / "old"))
    for name, int8 in available_exports():  # each in a process of its own, as test_edge does (litert's threads)
        result = subprocess.run([sys.executable, "-m", "vistrain", "export", old, "--format", name,
                                 *(["--int8"] if int8 else [])], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert invoke("inspect", old).exit_code == 0
    assert {"model.onnx", "model-int8.onnx", "model.pt", "inspect_most_confident.csv"} <= set(os.listdir(old))
    (old / "notes.txt").write_text("the user's")
    settings = ["--head", "logistic", "--seed", "2"]
    assert invoke("train", shapes_split, "--out", tmp_path / "fresh", *settings).exit_code == 0
    result = invoke("train", shapes_split, "--out", old, "--overwrite", *settings)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(old)) == sorted(os.listdir(tmp_path / "fresh") + ["notes.txt"])
    assert read_config(old).head.kind == "logistic"


def test_history_csv_names_each_epoch_s_phase_and_reads_older_files_stage_column(tmp_path: Path):
    from vistrain.model.run_dir import read_history

    header = "epoch,train_loss,train_accuracy,val_loss,val_accuracy"
    for column in ("phase", "stage"):  # as written now, and before 2026-12-04
        run = tmp_path / column
        run.mkdir()
        (run / "history.csv").write_text(f"{header},{column}\n1,0.5,0.8,0.4,0.9,frozen\n2,0.3,0.9,0.2,0.95,fine-tune\n")
        assert [(row["epoch"], row["val_loss"], row["phase"]) for row in read_history(run)] == [
            (1, 0.4, "frozen"), (2, 0.2, "fine-tune")]
