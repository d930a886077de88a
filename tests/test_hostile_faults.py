"""Faults (issue 26): full disks (a small tmpfs), two trainings writing one run directory at once, and `kill -9`
during `export`. Each runs the real command, in a child process where it is killed or raced."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import torch

from conftest import invoke
from test_hostile_runs import commands, fails_clearly, no_server  # noqa: F401  (a fixture)
from vistrain.model.run_dir import CHECKPOINT

LOGISTIC = ["--head", "logistic", "--seed", "1"]  # seconds to train once the features are cached


def stops_with_one_line(*args) -> str:
    """Run the command line: after what it printed while it worked, it must stop with exit code 1 and one line, no
    traceback. Returns that line."""
    result = invoke(*args)
    last = result.stderr.strip().splitlines()[-1]
    assert result.exit_code == 1 and last.startswith("Error: ") and "Traceback" not in result.output, result.output
    return last


@pytest.fixture
def small_disk(tmp_path: Path):
    """mount(size) -> a folder on a tmpfs of `size` (e.g. "120k"), unmounted after the test; the test is skipped
    where this user may not mount one."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk-{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): full disks untested")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_cache_disk_is_one_line(run: Path, shapes_split: Path, feature_cache: Path, small_disk, tmp_path: Path):
    exported = next(feature_cache.glob("backbone-*.onnx"))  # the backbone, exported by the `run` fixture's training
    cache = small_disk(f"{exported.stat().st_size // 1024 + 64}k")  # room for the backbone and a few features
    shutil.copy(exported, cache)
    error = stops_with_one_line("train", shapes_split, "--out", tmp_path / "run", "--cache-dir", cache, *LOGISTIC)
    assert "no space left on the device of" in error and f"{cache}/features-" in error


@pytest.mark.slow
@pytest.mark.parametrize("size, last", [("40k", "config.json"), ("120k", "report.html")])
def test_a_full_out_disk_is_one_line_and_leaves_a_run_that_only_resume_uses(run: Path, shapes_split: Path, small_disk,
                                                                             no_server, tmp_path: Path, size: str,
                                                                             last: str):
    out = small_disk(size) / "run"
    error = stops_with_one_line("train", shapes_split, "--out", out, *LOGISTIC)
    assert f"no space left on the device of {out / last}" in error
    assert (out / CHECKPOINT).exists() and (out / "config.json").exists() == (last == "report.html")
    for name, args in commands(out, shapes_split, tmp_path).items():
        if name != "inspect":  # the report's own writer
            assert "is incomplete" in fails_clearly(*args) or "not a vistrain run" in fails_clearly(*args), name
    moved = Path(shutil.copytree(out, tmp_path / "moved"))  # to a disk with room
    resumed = invoke("train", "--resume", moved)
    assert resumed.exit_code == 0, resumed.output
    assert (moved / "report.html").exists() and not (moved / CHECKPOINT).exists()
    assert invoke("predict", moved, next((shapes_split / "val" / "circle").iterdir())).exit_code == 0


@pytest.mark.slow
def test_a_second_training_on_a_run_directory_being_written_is_refused(run: Path, shapes_split: Path, tmp_path: Path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "vistrain", "train", str(shapes_split), "--out", str(out),
                              "--epochs", "400", "--batch-size", "4", "--overwrite"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-m", "vistrain", "train", str(shapes_split), "--out", str(out),
                             "--overwrite", *LOGISTIC], capture_output=True, text=True, timeout=300)
    still_running = first.poll() is None
    first.kill()
    first.wait()
    assert still_running, f"the first training ended before the second started: {first.stderr.read()[-2000:]}"
    assert second.returncode == 1 and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert f"{out} is being written by vistrain process {first.pid}" in second.stderr
    job = torch.load(out / CHECKPOINT, weights_only=True)["job"]  # the first one's run, not overwritten
    assert job["options"]["epochs"] == 400 and job["options"]["head"] == "mlp"


@pytest.mark.slow
def test_kill_9_during_export_leaves_no_partial_model(run: Path, tmp_path: Path):
    """Held from round 1: the model is written to a temporary name and renamed into place, so a process killed while
    it writes leaves no model.onnx (a hidden temporary file at most)."""
    out = tmp_path / "export"
    out.mkdir()
    for attempt in range(3):  # the file is written in a few milliseconds: catch the process while it writes
        process = subprocess.Popen([sys.executable, "-m", "vistrain", "export", str(run), "--out",
                                    str(out / "model.onnx")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None and not any(out.glob(".model.onnx.*")):
            time.sleep(0.0005)
        process.kill()
        process.wait()
        if process.returncode == -9:
            break
        (out / "model.onnx").unlink()
    else:
        pytest.skip("export finished writing each time before it could be killed")
    assert not (out / "model.onnx").exists()
    assert invoke("export", run, "--out", out / "model.onnx").exit_code == 0
    onnx.checker.check_model(onnx.load(out / "model.onnx"))
