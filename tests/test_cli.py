"""End to end through the command line, on generated images: train, the run directory, evaluate, predict."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import TRAIN_ARGS, invoke


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "timing"}


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(run: Path):
    assert {p.name for p in run.iterdir()} == {
        "config.json", "head.safetensors", "metrics.json", "history.csv", "predictions.csv", "skipped.csv",
        "report.html", "inspect_most_confident.csv", "inspect_least_confident.csv",
        "inspect_confidently_wrong.csv", "inspect_label_errors.csv",
    }
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["circle", "square"]
    assert config["task"] == "binary"
    assert config["backbone"]["name"] == "efficientnet_lite0"
    assert config["preprocess"] == {"input_size": 224, "crop_pct": 0.875, "interpolation": "bicubic",
                                    "mean": [0.5] * 3, "std": [0.5] * 3}
    assert config["training"]["batch_size"] == 64 and config["training"]["learning_rate"] == 0.001
    assert {"torch", "timm", "vistrain"} <= set(config["versions"])
    assert load_file(run / "head.safetensors")  # weights load without pickle
    history = list(csv.DictReader(open(run / "history.csv")))
    assert len(history) == 15
    predictions = list(csv.DictReader(open(run / "predictions.csv")))
    assert len(predictions) == 16
    assert set(predictions[0]) == {"file", "true", "predicted", "prob_circle", "prob_square"}


@pytest.mark.slow
def test_the_model_learns_the_shapes(run: Path):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.85
    assert sum(map(sum, metrics["confusion_matrix"])) == 16


@pytest.mark.slow
def test_same_command_twice_gives_same_metrics(run: Path, shapes_split: Path, tmp_path: Path):
    result = invoke("train", shapes_split, "--out", tmp_path / "again", *TRAIN_ARGS)
    assert result.exit_code == 0
    first = json.loads((run / "metrics.json").read_text())
    second = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert without_timing(first) == without_timing(second)
    assert second["timing"]["features_computed"] == 0  # all from the cache


@pytest.mark.slow
def test_evaluate_prints_json_equal_to_training_metrics(run: Path, shapes_split: Path):
    result = invoke("evaluate", run, shapes_split, "--format", "json")
    assert result.exit_code == 0
    evaluation = json.loads(result.stdout)
    trained = json.loads((run / "metrics.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(trained["accuracy"])
    assert evaluation["confusion_matrix"] == trained["confusion_matrix"]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the terminal tables printed in `text`, each as its cells."""
    return [[cell.strip() for cell in line.strip("│ ").split("│")] for line in text.splitlines() if line.startswith("│")]


def metrics_table(metrics: dict) -> list[list[str]]:
    """The rows `evaluate` prints for single-label metrics: a row per class, then the confusion matrix's rows."""
    per_class = [[name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"])]
                 for name, m in metrics["per_class"].items()]
    return per_class + [[name, *map(str, row)] for name, row in zip(metrics["per_class"], metrics["confusion_matrix"])]


@pytest.mark.slow
def test_evaluate_table_shows_the_metrics_row_by_row(run: Path, shapes_split: Path, tmp_path: Path):
    """The table holds metrics.json's numbers, class by class; and on labels where the classes' precision, recall
    and counts all differ (three squares filed as circles, a circle as a square), those of `--format json`."""
    table = invoke("evaluate", run, shapes_split).stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert table_rows(table) == metrics_table(metrics)
    assert f"accuracy {metrics['accuracy']:.4f} on {metrics['n_images']} images" in table
    assert f"(macro F1 {metrics['macro_f1']:.4f} · ROC AUC {metrics['roc_auc']:.4f})" in table

    circles, squares = (sorted((shapes_split / "val" / kind).iterdir()) for kind in ("circle", "square"))
    for folder, files in (("circle", circles[1:] + squares[:3]), ("square", squares[3:] + circles[:1])):
        (tmp_path / folder).mkdir()
        for file in files:
            shutil.copy(file, tmp_path / folder / file.name)
    table = invoke("evaluate", run, tmp_path).stdout
    metrics = json.loads(invoke("evaluate", run, tmp_path, "--format", "json").stdout)
    (p_circle, r_circle), (p_square, r_square) = ((m["precision"], m["recall"]) for m in metrics["per_class"].values())
    assert len({p_circle, r_circle, p_square, r_square}) == 4  # a swapped column or class would show
    assert table_rows(table) == metrics_table(metrics)
    assert f"accuracy {metrics['accuracy']:.4f} on 16 images" in table


@pytest.mark.slow
def test_predict_reports_bad_files_and_predicts_the_rest(run: Path, shapes_split: Path, tmp_path: Path):
    good = sorted((shapes_split / "val" / "square").iterdir())[:2]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    result = invoke("predict", run, good[0], bad, good[1], "--format", "json")
    rows = json.loads(result.stdout)
    assert [Path(r["file"]).name for r in rows] == [good[0].name, "notes.jpg", good[1].name]
    assert rows[1]["error"].startswith("not an image") and rows[1]["class"] == ""
    assert rows[0]["class"] == "square" and rows[0]["top"][0][0] == "square"
    assert sum(p for _, p in rows[0]["top"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_predict_threshold_marks_uncertain(run: Path, shapes_split: Path):
    folder = shapes_split / "val" / "circle"
    everything = json.loads(invoke("predict", run, folder, "--format", "json", "--threshold", "1.0").stdout)
    nothing = json.loads(invoke("predict", run, folder, "--format", "json", "--threshold", "0.0").stdout)
    assert len(everything) == 8 and all(r["uncertain"] for r in everything)
    assert not any(r["uncertain"] for r in nothing)


@pytest.mark.slow
def test_predict_csv_has_a_header_and_a_row_per_file(run: Path, shapes_split: Path):
    result = invoke("predict", run, shapes_split / "val", "--format", "csv", "--top-k", "1")
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert len(rows) == 16 and rows[0]["top"].count(":") == 1


@pytest.mark.slow
def test_predict_uses_the_runs_preprocessing_not_the_backbones(run: Path, shapes_split: Path, tmp_path: Path):
    edited = tmp_path / "edited-run"
    shutil.copytree(run, edited)
    config = json.loads((edited / "config.json").read_text())
    config["preprocess"]["mean"] = [0.0, 0.0, 0.0]
    config["preprocess"]["std"] = [1.0, 1.0, 1.0]
    (edited / "config.json").write_text(json.dumps(config))
    image = sorted((shapes_split / "val" / "circle").iterdir())[0]
    original = json.loads(invoke("predict", run, image, "--format", "json").stdout)[0]
    changed = json.loads(invoke("predict", edited, image, "--format", "json").stdout)[0]
    assert original["probability"] != pytest.approx(changed["probability"], abs=1e-6)


@pytest.mark.slow
def test_bad_files_in_training_data_are_skipped_and_listed(shapes_split: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(shapes_split, data)
    (data / "train" / "circle" / "zero.jpg").write_bytes(b"")
    (data / "train" / "square" / "readme.txt").write_text("hello")
    result = invoke("train", data, "--out", tmp_path / "run", "--epochs", "2")
    assert result.exit_code == 0
    skipped = list(csv.DictReader(open(tmp_path / "run" / "skipped.csv")))
    assert {Path(r["file"]).name for r in skipped} == {"zero.jpg", "readme.txt"}
    assert "zero.jpg" in result.stderr and "empty file" in result.stderr


@pytest.mark.parametrize(
    "layout, message",
    [({"a": 2}, "single class folder"), ({"a": 2, "b": 0}, "empty class folder")],
)
def test_unusable_data_gives_one_clear_line(tmp_path: Path, layout: dict, message: str):
    for name, n in layout.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            (tmp_path / name / f"{i}.png").write_bytes(b"x")
    result = invoke("train", tmp_path, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_refuses_to_overwrite_a_run(run: Path, shapes_split: Path):
    result = invoke("train", shapes_split, "--out", run)
    assert result.exit_code == 1 and "--overwrite" in result.stderr


def test_predict_on_a_folder_that_is_not_a_run(tmp_path: Path):
    result = invoke("predict", tmp_path, tmp_path)
    assert result.exit_code == 1 and "not a vistrain run directory" in result.stderr
