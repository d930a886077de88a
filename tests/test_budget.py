"""--budget end to end, on tiny data: a run within its time with its leaderboard, a run at the data's small
resolution that predicts and exports at that size, and upper-stage fine-tuning resumed after kill -9."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import invoke, kill_when, run_onnx_example, shape_image, write_class_folders
from vistrain.features import activations
from vistrain.model.predictor import Predictor
from vistrain.model.run_dir import CHECKPOINT
from vistrain.training import fine_tuning
from vistrain.training.combined import try_combined



@pytest.mark.slow
def test_a_tiny_budget_finishes_within_it_and_leaves_a_valid_run(shapes_split: Path, tmp_path: Path, monkeypatch):
    assert invoke("train", shapes_split, "--out", tmp_path / "plain").exit_code == 0  # the features, cached
    bars = []  # (label, total, shown) of each progress bar the budget's long steps ask for

    @contextlib.contextmanager
    def recorded(label: str, total: int, show: bool = True):
        bars.append((label, total, show))
        yield lambda n: None

    for module in (activations, fine_tuning):
        monkeypatch.setattr(module, "progress_bar", recorded)
    started = time.perf_counter()
    result = invoke("train", shapes_split, "--budget", "20s", "--out", tmp_path / "run", "--seed", "1")
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert elapsed <= 22, f"--budget 20s took {elapsed:.1f} s"
    rows = list(csv.DictReader(open(tmp_path / "run" / "leaderboard.csv")))
    assert [row["candidate"] for row in rows] == ["logistic", "mlp", "larger-backbone", "upper-stages", "whole",
                                                  "combined"]
    assert "not tried: the images are smaller than efficientnet_lite0's 224 px input" in rows[2]["note"]
    chosen = [row for row in rows if row["chosen"] == "yes"]
    assert len(chosen) == 1 and chosen[0]["selection_accuracy"] and chosen[0]["validation_accuracy"]
    assert float(chosen[0]["selection_loss"]) >= 0  # ties are broken by it
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["budget"]["chosen"] == chosen[0]["candidate"] and config["budget"]["seconds"] == 20
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(float(chosen[0]["validation_accuracy"]), abs=1e-4)
    report = (tmp_path / "run" / "report.html").read_text()
    assert 'id="leaderboard"' in report and all(row["candidate"] in report for row in rows)
    assert "leaderboard" in result.output and chosen[0]["candidate"] in result.output
    # the command shows progress for the upper stages' activations of the fit images and the whole backbone's decoding
    fit_images = len(list((shapes_split / "train").glob("*/*.png"))) - config["budget"]["held_out_images"]
    shown = {(label.split(" (")[0].removesuffix(" at 96 px"), total) for label, total, show in bars if show}
    assert {("activations of the lower stages", fit_images), ("decoding", fit_images)} <= shown, bars
    val = sorted((shapes_split / "val").glob("*/*.png"))
    predicted = invoke("predict", tmp_path / "run", *val, "--format", "json")
    assert predicted.exit_code == 0 and len(json.loads(predicted.stdout)) == len(val)


def large_shapes(root: Path) -> Path:
    """240 px circles and squares: 20 a class for training, 6 for validation (at least the backbones' inputs)."""
    write_class_folders(root / "train", 20, size=240)
    write_class_folders(root / "val", 6, offset=500, size=240)
    return root


def predicted_as_recorded(run: Path, images: list[Path], cache: Path, tolerance: float) -> np.ndarray:
    """The run's predictions for its validation `images` (their outputs), checked against its predictions.csv."""
    predicted = Predictor.from_run(run).predict(images, cache, show_progress=False).outputs
    saved = {r["file"]: float(r["prob_square"]) for r in csv.DictReader(open(run / "predictions.csv"))}
    assert predicted[:, 1] == pytest.approx([saved[str(p)] for p in images], abs=tolerance)
    return predicted


@pytest.mark.slow
def test_a_larger_backbones_head_predicts_with_it_and_is_settled_against_lite0_by_cross_validation(tmp_path: Path):
    data = large_shapes(tmp_path / "data")
    run = tmp_path / "larger"
    result = invoke("train", data, "--budget", "5m", "--candidates", "larger-backbone", "--out", run)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"]["name"] == config["training"]["backbone"] == "efficientnet_lite2"
    assert config["preprocess"]["input_size"] == 260 and config["budget"]["chosen"] == "larger-backbone"
    predicted_as_recorded(run, sorted((data / "val").glob("*/*.png")), tmp_path / "cache", 1e-4)

    both = tmp_path / "both"
    result = invoke("train", data, "--budget", "5m", "--candidates", "logistic,larger-backbone", "--out", both)
    assert result.exit_code == 0, result.output
    rows = {row["candidate"]: row for row in csv.DictReader(open(both / "leaderboard.csv"))}
    assert list(rows) == ["logistic", "larger-backbone"] and all(row["selection_accuracy"] for row in rows.values())
    ruled_out = [name for name, row in rows.items() if "ruled out" in row["note"]]
    assert len(ruled_out) == 1 and "cross-validated on all 40 training images" in rows[ruled_out[0]]["note"]
    chosen = [name for name, row in rows.items() if row["chosen"] == "yes"]
    assert len(chosen) == 1 and chosen != ruled_out


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_the_combined_candidate_is_one_model_that_predicts_and_exports_what_it_scored(tmp_path: Path, monkeypatch):
    """Chosen (made to win here: on toy data every candidate scores 100%), the fine-tuned upper stages and the
    logistic head averaged are one backbone and one head: predict and an ONNX export give what the run recorded."""
    import vistrain.training.budget as budget

    def winning(*args):
        outcome = try_combined(*args)
        return dataclasses.replace(outcome, selection=1.0, selection_loss=-1.0) if outcome.tried else outcome

    monkeypatch.setattr(budget, "try_combined", winning)
    data = large_shapes(tmp_path / "data")
    run = tmp_path / "run"
    result = invoke("train", data, "--budget", "5m", "--candidates", "logistic,upper-stages,combined", "--out", run)
    assert result.exit_code == 0, result.output
    rows = {row["candidate"]: row for row in csv.DictReader(open(run / "leaderboard.csv"))}
    assert list(rows) == ["logistic", "upper-stages", "combined"] and rows["combined"]["chosen"] == "yes"
    assert rows["combined"]["note"] == "upper-stages and logistic"
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"]["name"] == "efficientnet_lite0+efficientnet_lite0"
    assert config["backbone"]["feature_dim"] == 2560 and config["fine_tune"]["parts"] == ["upper-stages", "logistic"]
    val = sorted((data / "val").glob("*/*.png"))
    predicted = predicted_as_recorded(run, val, tmp_path / "cache", 2e-3)  # fp16 activations aside
    out = tmp_path / "model.onnx"
    assert invoke("export", run, "--out", out).exit_code == 0
    output = run_onnx_example(out, val)
    probabilities = np.array([float(line.rsplit(" ", 2)[2]) for line in output])
    assert probabilities == pytest.approx(predicted.max(1), abs=0.02)


@pytest.fixture(scope="module")
def small_images(tmp_path_factory) -> Path:
    """12 x 12 px circles and squares: far below the backbone's 224 px."""
    root = tmp_path_factory.mktemp("small")
    for split, count, offset in (("train", 24, 0), ("val", 8, 500)):
        for kind in ("circle", "square"):
            (root / split / kind).mkdir(parents=True)
            for i in range(count):
                image = shape_image(kind, offset + 1000 * (kind == "square") + i, size=48).resize((12, 12))
                image.save(root / split / kind / f"{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_a_run_at_the_datas_small_resolution_predicts_and_exports_at_it(small_images: Path, tmp_path: Path):
    import onnx

    run = tmp_path / "run"
    result = invoke("train", small_images, "--budget", "4m", "--candidates", "whole", "--out", run)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["preprocess"]["input_size"] == 64 and config["fine_tune"]["input_size"] == 64
    val = sorted((small_images / "val").glob("*/*.png"))
    predicted = predicted_as_recorded(run, val, tmp_path / "cache", 2e-3)  # fp16 activations aside
    for int8 in (False, True):
        out = tmp_path / f"model{'-int8' if int8 else ''}.onnx"
        assert invoke("export", run, "--out", out, *(["--int8"] if int8 else [])).exit_code == 0
        shape = onnx.load(out).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in shape[1:]] == [64, 64, 3]
        output = run_onnx_example(out, val)
        classes = [line.rsplit(" ", 2)[1] for line in output]
        probabilities = np.array([float(line.rsplit(" ", 2)[2]) for line in output])
        agree = np.mean([c == ["circle", "square"][row.argmax()] for c, row in zip(classes, predicted)])
        assert agree >= (0.9 if int8 else 1.0)
        if not int8:  # Pillow's bicubic upscaling differs a little from torch's
            assert probabilities == pytest.approx(predicted.max(1), abs=0.05)
    scripted = tmp_path / "model.pt"
    assert invoke("export", run, "--format", "torchscript", "--out", scripted).exit_code == 0
    module = torch.jit.load(scripted)
    with torch.no_grad():
        assert module(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)).shape == (1, 2)


def upper_epochs(run: Path) -> int:
    try:
        state = torch.load(run / CHECKPOINT, weights_only=True)
        return len(state["phases"].get("upper-stages", {}).get("history", []))
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


@pytest.mark.slow
def test_upper_stage_fine_tuning_resumes_after_kill_to_the_same_result(tmp_path: Path):
    """Killed in the upper stages, after the larger backbone was tried and settled against Lite0: what the
    checkpoint keeps of them (ruled out or not, which backbone) gives the uninterrupted run's leaderboard."""
    data = write_class_folders(tmp_path / "data", 24, size=240)
    cache = tmp_path / "cache"
    args = ["--budget", "10m", "--candidates", "logistic,larger-backbone,upper-stages,combined", "--cache-dir",
            cache, "--seed", "3", "--device", "cpu"]
    whole = invoke("train", data, "--out", tmp_path / "whole", *args)
    assert whole.exit_code == 0, whole.output
    planned = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert planned["budget"]["chosen"] in ("logistic", "larger-backbone", "upper-stages", "combined")
    assert "ruled out" in (tmp_path / "whole" / "leaderboard.csv").read_text()

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "vistrain", "train", str(data), "--out", str(killed),
                                *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(process, lambda: upper_epochs(killed) >= 2)
    done = upper_epochs(killed)
    if not 0 < done < 12:
        pytest.fail(f"could not interrupt upper-stage fine-tuning (epochs done: {done})")
    assert process.returncode == -9 and not (killed / "config.json").exists()
    phase = torch.load(killed / CHECKPOINT, weights_only=True)["phases"]["upper-stages"]
    assert len(phase["held_logits"]) == len(phase["history"])  # each epoch's, for the cross-fitted best epoch

    resumed = invoke("train", "--resume", killed, "--cache-dir", cache)
    assert resumed.exit_code == 0, resumed.output
    assert (killed / "history.csv").read_text() == (tmp_path / "whole" / "history.csv").read_text()
    expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    got = json.loads((killed / "metrics.json").read_text())
    assert got["accuracy"] == expected["accuracy"] and got["val_loss"] == pytest.approx(expected["val_loss"], abs=1e-6)
    assert (killed / "leaderboard.csv").read_text().count("\n") == 5
    resumed_config = json.loads((killed / "config.json").read_text())
    for key in ("backbone", "preprocess"):
        assert resumed_config[key] == planned[key]
    got_rows = list(csv.DictReader(open(killed / "leaderboard.csv")))
    expected_rows = list(csv.DictReader(open(tmp_path / "whole" / "leaderboard.csv")))
    for got_row, expected_row in zip(got_rows, expected_rows):
        assert {k: v for k, v in got_row.items() if k != "seconds"} == \
            {k: v for k, v in expected_row.items() if k != "seconds"}
