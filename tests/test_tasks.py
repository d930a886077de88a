"""Every task of the course's table, end to end on images the tests draw: labels from CSV lists (bad rows
reported by line), multi-label and regression through train, evaluate, predict and inspect, class imbalance."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import invoke
from vistrain.model import tasks
from vistrain.data.datasets import load_dataset
from vistrain.data.samples import DataError
from vistrain.data.labels_csv import infer_kind, read_label_csv


def drawing(shape: str, light: bool, radius: int, seed: int, size: int = 96) -> Image.Image:
    """A circle or square of a given radius on a light or dark noisy background."""
    rng = np.random.default_rng(seed)
    base = 200 if light else 40
    image = Image.fromarray((rng.integers(0, 40, (size, size, 3)) + base).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    cx = cy = size // 2
    colour = (220, 40, 40) if light else (60, 200, 240)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
    return image


@pytest.fixture(scope="module")
def drawings(tmp_path_factory) -> Path:
    """48 drawings with labels.csv (multi-label: shape;light) and sizes.csv (regression: radius)."""
    root = tmp_path_factory.mktemp("drawings")
    rng = random.Random(3)
    multilabel, sizes = ["path,labels"], ["path,radius"]
    for i in range(48):
        shape, light, radius = ("circle", "square")[i % 2], (i // 2) % 2 == 0, rng.randrange(8, 44)
        drawing(shape, light, radius, seed=i).save(root / f"d{i}.png")
        multilabel.append(f"d{i}.png," + ";".join([shape] + (["light"] if light else [])))
        sizes.append(f"d{i}.png,{radius}")
    (root / "labels.csv").write_text("\n".join(multilabel) + "\n")
    (root / "sizes.csv").write_text("\n".join(sizes) + "\n")
    return root


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_csv_rows_are_reported_with_line_numbers_and_never_used(tmp_path: Path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        drawing("circle", True, 20, 0).save(tmp_path / name)
    csv = write(tmp_path / "sizes.csv", "file,radius\na.png,1.5\nmissing.png,2\nb.png,\nc.png,big\nd.png,3\nc.png,4\n")
    dataset = load_dataset(csv, val_fraction=0.34, task="regression")
    reasons = sorted(s.reason for s in dataset.skipped)
    assert reasons == ["sizes.csv line 3: no such file", "sizes.csv line 4: empty label",
                       "sizes.csv line 5: 'big' is not a number"]
    assert sorted(s.target for s in dataset.train + dataset.val) == [(1.5,), (3.0,), (4.0,)]


def test_csv_kind_is_inferred_and_an_explicit_task_is_checked(tmp_path: Path):
    for name in ("a.png", "b.png", "c.png"):
        drawing("circle", True, 20, 0).save(tmp_path / name)
    assert infer_kind(read_label_csv(write(tmp_path / "m.csv", "a.png,cat;dog\nb.png,cat\n")))[0] == "multilabel"
    assert infer_kind(read_label_csv(write(tmp_path / "r.csv", "a.png,0.5\nb.png,2\nc.png,7\n")))[0] == "regression"
    assert infer_kind(read_label_csv(write(tmp_path / "b.csv", "a.png,0\nb.png,1\nc.png,1\n")))[0] == "classes"
    assert infer_kind(read_label_csv(write(tmp_path / "c.csv", "a.png,cat\nb.png,dog\n")))[0] == "classes"
    with pytest.raises(DataError, match="binary needs exactly 2 classes"):
        load_dataset(write(tmp_path / "three.csv", "a.png,x\nb.png,y\nc.png,z\n"), task="binary")
    split = load_dataset(write(tmp_path / "s.csv", "path,label,split\na.png,x,train\nb.png,y,train\nc.png,x,val\n"))
    assert [s.path.name for s in split.val] == ["c.png"] and split.task == "binary"


def test_balanced_weights_and_sampler_favour_the_rare_class():
    targets = torch.tensor([0] * 9 + [1])
    assert tasks.balanced_weights("binary", targets, 2).tolist() == pytest.approx([10 / 18, 10 / 2])
    drawn = torch.multinomial(tasks.balanced_sample_weights("multiclass", targets), 10_000, replacement=True,
                              generator=torch.Generator().manual_seed(0))
    assert 0.45 < (targets[drawn] == 1).float().mean().item() < 0.55
    multilabel = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    assert tasks.balanced_weights("multilabel", multilabel, 2).tolist() == [0.0, 3.0]
    with pytest.raises(ValueError, match="regression"):
        tasks.balanced_weights("regression", torch.zeros(4, 1), 1)


@pytest.mark.slow
def test_multilabel_end_to_end(drawings: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = invoke("train", "--labels", drawings / "labels.csv", "--out", out, "--epochs", "30", "--seed", "1",
                    "--val-fraction", "0.3")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "multilabel" and config["classes"] == ["circle", "light", "square"]
    assert len(config["thresholds"]) == 3 and all(0 < t < 1 for t in config["thresholds"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["micro_f1"] > 0.8 and set(metrics["per_label"]) == {"circle", "light", "square"}

    images = [drawings / "d0.png", drawings / "d3.png"]  # light circle; dark square
    rows = json.loads(invoke("predict", out, *images, "--format", "json").stdout)
    assert [set(r["class"].split(";")) for r in rows] == [{"circle", "light"}, {"square"}]
    everything = json.loads(invoke("predict", out, *images, "--format", "json", "--threshold", "0").stdout)
    assert all(set(r["class"].split(";")) == {"circle", "light", "square"} for r in everything)

    scored = json.loads(invoke("evaluate", out, "--labels", drawings / "labels.csv", "--format", "json").stdout)
    assert scored["task"] == "multilabel" and scored["n_images"] == 48 and scored["micro_f1"] > 0.8

    inspected = invoke("inspect", out, "--top", "3")
    assert inspected.exit_code == 0, inspected.output
    html = (out / "report.html").read_text()
    assert html.count('class="label-section"') == 3
    assert 'data-class="not light"' in html and 'data-list="confidently_wrong"' in html


@pytest.mark.slow
def test_regression_end_to_end(drawings: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = invoke("train", "--labels", drawings / "sizes.csv", "--out", out, "--epochs", "60", "--seed", "1",
                    "--head", "linear", "--dropout", "0", "--val-fraction", "0.3")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["task"] == "regression"  # decided from the labels
    metrics = json.loads((out / "metrics.json").read_text())
    radii = [float(line.split(",")[1]) for line in (drawings / "sizes.csv").read_text().split()[1:]]
    assert metrics["mae"] < 0.6 * np.mean(np.abs(np.array(radii) - np.mean(radii)))  # far better than the mean
    assert metrics["r2"] > 0.5

    rows = json.loads(invoke("predict", out, drawings / "d0.png", "--format", "json").stdout)
    radius = float(rows[0]["top"][0][1])
    assert rows[0]["top"][0][0] == "radius" and abs(radius - radii[0]) < 10
    assert "does not apply" in invoke("predict", out, drawings / "d0.png", "--threshold", "0.5").output

    inspected = invoke("inspect", out, "--top", "4")
    assert inspected.exit_code == 0, inspected.output
    errors = (out / "inspect_largest_errors.csv").read_text().splitlines()
    assert errors[0] == "rank,file,true,predicted,error" and len(errors) == 5
    values = [float(line.rsplit(",", 1)[1]) for line in errors[1:]]
    assert values == sorted(values, reverse=True)
    html = (out / "report.html").read_text()
    assert 'alt="predicted vs true"' in html and 'data-list="largest_errors"' in html and "R²" in html


def test_regression_from_folders_named_by_numbers(tmp_path: Path):
    for value, radius in (("10", 10), ("30", 30)):
        (tmp_path / value).mkdir()
        for i in range(3):
            drawing("circle", True, radius, i).save(tmp_path / value / f"{i}.png")
    dataset = load_dataset(tmp_path, val_fraction=0.34, task="regression")
    assert dataset.classes == ["value"] and dataset.task == "regression"
    assert sorted(s.target for s in dataset.train + dataset.val) == [(10.0,)] * 3 + [(30.0,)] * 3
    (tmp_path / "big").mkdir()
    drawing("circle", True, 40, 0).save(tmp_path / "big" / "0.png")
    with pytest.raises(DataError, match="named by numbers"):
        load_dataset(tmp_path, task="regression")


@pytest.mark.slow
def test_imbalance_warning_and_balanced_options(tmp_path: Path):
    from conftest import write_class_folders

    write_class_folders(tmp_path / "data", 20, classes=("circle",))
    write_class_folders(tmp_path / "data", 3, classes=("square",), offset=50)
    plain = invoke("train", tmp_path / "data", "--out", tmp_path / "plain", "--epochs", "3")
    assert plain.exit_code == 0 and "circle holds 89% of the training images" in plain.stderr

    def minority_probability(run: Path) -> float:  # the mean probability of "square" over the validation images
        with open(run / "predictions.csv", newline="") as file:
            return float(np.mean([float(row["prob_square"]) for row in csv.DictReader(file)]))

    for option in ("--class-weight", "--sampler"):
        result = invoke("train", tmp_path / "data", "--out", tmp_path / option.strip("-"), "--epochs", "3",
                        option, "balanced")
        assert result.exit_code == 0, result.output
        config = json.loads((tmp_path / option.strip("-") / "config.json").read_text())
        assert config["training"][option.strip("-").replace("-", "_")] == "balanced"
        # weighting the rare class (or drawing it as often as the other) pushes the model towards it
        assert minority_probability(tmp_path / option.strip("-")) > minority_probability(tmp_path / "plain") + 0.02


def test_regression_split_keeps_every_value_range_in_validation(tmp_path: Path):
    drawing("circle", True, 20, 0).save(tmp_path / "a.png")
    rows = ["path,value"] + [f"a.png,{v}" for v in [0.0, 1.0] + [i / 10 for i in range(2, 100)]]
    dataset = load_dataset(write(tmp_path / "v.csv", "\n".join(rows) + "\n"), val_fraction=0.2, task="regression")
    values = sorted(s.target[0] for s in dataset.val)
    assert len(dataset.val) == 20 and values[0] < 2.0 and values[-1] > 8.0  # every quintile represented
