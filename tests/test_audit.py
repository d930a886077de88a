"""`vistrain audit` and `vistrain review`: planted label flips, an off-topic photo and duplicates are found from
out-of-sample predictions for every task; decisions made in the review page (in headless Chromium) are saved
at once and honoured by train, evaluate, split and check; the original files never change."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from conftest import invoke, shape_image, write_class_folders
from vistrain.analysis.audit import audit, wilson_interval
from vistrain.data.datasets import load_dataset
from vistrain.data.decisions import DECISIONS_FILE, Decisions

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` (the decisions file aside) by its bytes' SHA-256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != DECISIONS_FILE}


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Path:
    """16 circles and 16 squares, plus two circles filed as squares, a photo of coffee filed as a circle, and a
    circle copied into the squares."""
    root = write_class_folders(tmp_path_factory.mktemp("noisy") / "data", 16)
    for i in range(2):
        shape_image("circle", seed=9000 + i).save(root / "square" / f"flip_{i}.png")
    Image.fromarray(skimage.data.coffee()).save(root / "circle" / "coffee.png")
    shutil.copy(root / "circle" / "circle_3.png", root / "square" / "copy_of_circle_3.png")
    return root


@pytest.fixture(scope="module")
def found(noisy: Path):
    return audit(noisy, show_progress=False)


def kinds_of(result, name: str) -> set[str]:
    return {f.kind for f in result.findings if f.file.name == name}


def test_planted_flips_are_label_issues_with_the_right_suggestion(found):
    issues = [f for f in found.findings if f.kind == "label issue"]
    assert {f.file.name for f in issues} >= {"flip_0.png", "flip_1.png"}
    flips = [f for f in issues if f.file.name.startswith("flip")]
    assert all(f.given == "square" and f.suggested == "circle" for f in flips)
    assert found.findings[0].kind == "label issue"  # label issues lead the queue
    assert len(issues) <= 5  # and are not everything


def test_an_off_topic_photo_is_found_however_confident_the_model(found):
    assert "off-topic" in kinds_of(found, "coffee.png")
    off_topic = [f for f in found.findings if f.kind == "off-topic"]
    assert off_topic[0].file.name == "coffee.png" and off_topic[0].score == pytest.approx(found.outlier_z.max())
    assert off_topic[0].score > 2 * max(f.score for f in off_topic[1:] or [off_topic[0]]) or len(off_topic) == 1


def test_a_copy_under_another_class_is_a_conflicting_duplicate(found):
    conflicts = [f for f in found.findings if f.kind == "duplicate: conflicting labels"]
    assert {(f.file.name, f.given, f.suggested, f.group) for f in conflicts} == \
        {("circle_3.png", "circle", "square", 1), ("copy_of_circle_3.png", "square", "circle", 1)}  # one group


def test_cross_validated_accuracy_and_its_interval(found):
    name, value, low, high = found.metric
    assert name == "accuracy" and low <= value <= high and 0.85 < value < 1.0  # the flips cannot be predicted
    assert len(found.files) == 36 and found.folds == 5
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_audit_command_writes_its_files(noisy: Path, tmp_path: Path):
    before = tree_digest(noisy)
    result = invoke("audit", noisy, "--out", tmp_path / "audit")
    assert result.exit_code == 0, result.output
    assert "cross-validated accuracy" in result.stderr
    rows = list(csv.DictReader(open(tmp_path / "audit" / "audit.csv")))
    assert any(Path(r["file"]).name == "flip_0.png" and r["kind"] == "label issue" for r in rows)
    assert rows[0]["kind"] == "label issue" and rows[0]["rank"] == "1"
    assert {"file", "given_label", "suggested_label", "kind", "score"} <= set(rows[0])
    html = (tmp_path / "audit" / "audit.html").read_text()
    assert "data:image/jpeg;base64," in html and "coffee.png" in html
    assert len(list(csv.DictReader(open(tmp_path / "audit" / "predictions.csv")))) == 36
    assert tree_digest(noisy) == before


def write_csv(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(rows)
    return path


@pytest.fixture(scope="module")
def shapes_list(tmp_path_factory) -> list[tuple[str, str]]:
    """(file, kind) of 14 circles and 14 squares in one folder."""
    root = tmp_path_factory.mktemp("listed")
    rows = []
    for kind in ("circle", "square"):
        for i in range(14):
            shape_image(kind, seed=3000 + 100 * (kind == "square") + i).save(root / f"{kind}_{i}.png")
            rows.append((f"{kind}_{i}.png", kind))
    return root, rows


def test_multilabel_issues_are_per_label(shapes_list):
    root, rows = shapes_list
    labels = [(name, "round" if kind == "circle" else "angular;square") for name, kind in rows]
    labels[0] = (labels[0][0], "angular;square")  # a circle given the square's labels
    result = audit(write_csv(root / "multi.csv", [("path", "labels"), *labels]), show_progress=False)
    assert result.task == "multilabel"
    flagged = [f for f in result.findings if f.kind == "label issue" and f.file.name == "circle_0.png"]
    assert flagged and all("label" in f.detail for f in flagged)
    assert {f.file.name for f in result.findings if f.kind == "label issue"} <= {"circle_0.png"}


def test_regression_flags_the_largest_out_of_sample_residual(shapes_list):
    root, rows = shapes_list
    values = [(name, f"{(0.0 if kind == 'circle' else 10.0) + 0.1 * (i % 5):.2f}") for i, (name, kind) in
              enumerate(rows)]
    values[1] = (values[1][0], "10.0")  # a circle given a square's value
    result = audit(write_csv(root / "values.csv", [("path", "size"), *values]), show_progress=False)
    assert result.task == "regression" and result.metric[0] == "MAE"
    issues = [f for f in result.findings if f.kind == "label issue"]
    assert issues and issues[0].file.name == "circle_1.png" and float(issues[0].suggested) < 6


def test_multiclass_issues(shapes_list, tmp_path: Path):
    root, rows = shapes_list
    for i in range(14):  # a third class: noise without a shape
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(
            root / f"noise_{i}.png")
    labels = rows + [(f"noise_{i}.png", "noise") for i in range(14)]
    labels[20] = (labels[20][0], "noise")  # a square labelled noise
    result = audit(write_csv(root / "three.csv", [("path", "label"), *labels]), show_progress=False)
    assert result.task == "multiclass"
    top = [f for f in result.findings if f.kind == "label issue"]
    assert top and top[0].file.name == labels[20][0] and top[0].suggested == "square"


@pytest.mark.slow
def test_decisions_are_honoured_by_train_evaluate_split_and_check(noisy: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(noisy, data)
    decisions = Decisions.load(data / DECISIONS_FILE)
    decisions.decide(data / "square" / "flip_0.png", "relabel", "circle")
    decisions.decide(data / "circle" / "coffee.png", "exclude")
    decisions.decide(data / "square" / "flip_1.png", "keep")
    assert Decisions.load(data / DECISIONS_FILE).entries == decisions.entries  # saved at once
    before = tree_digest(data)

    dataset = load_dataset(data)
    targets = {s.path.name: dataset.classes[s.target] for s in dataset.train + dataset.val}
    assert targets["flip_0.png"] == "circle" and targets["flip_1.png"] == "square"
    assert "coffee.png" not in targets and any(s.path.name == "coffee.png" and s.reason == "excluded in review"
                                               for s in dataset.skipped)

    trained = invoke("train", data, "--out", tmp_path / "run", "--epochs", "3")
    assert trained.exit_code == 0, trained.output
    assert "3 review decision(s)" in trained.stderr
    skipped = {Path(r["file"]).name: r["reason"] for r in csv.DictReader(open(tmp_path / "run" / "skipped.csv"))}
    assert skipped.get("coffee.png") == "excluded in review"

    split = invoke("split", data, tmp_path / "clean")
    assert split.exit_code == 0, split.output
    placed = {p.relative_to(tmp_path / "clean").parts[1:] for p in (tmp_path / "clean").rglob("*.png")}
    assert ("circle", "flip_0.png") in placed and ("square", "flip_1.png") in placed
    assert not any(name == "coffee.png" for _, name in placed)

    checked = invoke("check", data, "--out", tmp_path / "check")
    assert checked.exit_code == 0, checked.output
    images = {Path(r["file"]).name: r["class"] for r in csv.DictReader(open(tmp_path / "check" / "images.csv"))}
    assert images["flip_0.png"] == "circle" and "coffee.png" not in images

    evaluated = invoke("evaluate", tmp_path / "run", data, "--format", "json")
    assert evaluated.exit_code == 0, evaluated.output
    reasons = {Path(s["file"]).name: s["reason"] for s in json.loads(evaluated.stdout)["skipped"]}
    assert reasons.get("coffee.png") == "excluded in review"
    assert tree_digest(data) == before  # originals never moved, renamed, deleted or changed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`apt-get install chromium`)")
def test_review_page_saves_decisions_that_reload_and_train_uses(noisy: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    data = tmp_path / "data"
    shutil.copytree(noisy, data)
    before = tree_digest(data)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "vistrain", "review", str(data), "--out", str(tmp_path / "a"),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/decisions", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"review did not start: {server.communicate()[1][-2000:]}")
                time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            first = page.text_content("#title")
            page.keyboard.press("a")  # relabel the first finding (a planted flip) as suggested
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('saved')")
            page.keyboard.press("x")  # exclude the second
            page.wait_for_function("document.querySelectorAll('#queue td:last-child')[1].textContent === 'exclude'")
            decisions = Decisions.load(data / DECISIONS_FILE)
            assert sorted(d.action for d in decisions.entries.values()) == ["exclude", "relabel"]
            page.reload()
            cells = page.eval_on_selector_all("#queue tbody tr td:last-child", "cells => cells.map(c => c.textContent)")
            assert cells[0] == "relabel as circle" and cells[1] == "exclude"
            assert "flip" in first
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert tree_digest(data) == before
    dataset = load_dataset(data)
    relabelled = [name for name, d in Decisions.load(data / DECISIONS_FILE).entries.items() if d.action == "relabel"]
    assert dataset.classes[next(s.target for s in dataset.train + dataset.val
                                if s.path.name == Path(relabelled[0]).name)] == "circle"
    assert len([s for s in dataset.skipped if s.reason == "excluded in review"]) == 1


@pytest.mark.slow
def test_inspect_ranks_training_images_by_the_audits_out_of_sample_predictions(noisy: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(noisy, data)
    assert invoke("train", data, "--out", tmp_path / "run", "--epochs", "15").exit_code == 0
    assert invoke("audit", data, "--out", tmp_path / "audit").exit_code == 0
    validation = {Path(r["file"]).name for r in csv.DictReader(open(tmp_path / "run" / "predictions.csv"))}
    training_flips = {f"flip_{i}.png" for i in range(2)} - validation
    assert training_flips

    def label_probabilities(*extra) -> dict[str, float]:
        result = invoke("inspect", tmp_path / "run", data, "--top", "40", *extra)
        assert result.exit_code == 0, result.output
        rows = csv.DictReader(open(tmp_path / "run" / "inspect_label_errors.csv"))
        return {Path(r["file"]).name: float(r["probability_of_label"]) for r in rows}

    in_sample = label_probabilities()
    out_of_sample = label_probabilities("--audit", tmp_path / "audit")
    for name in training_flips:  # the run has partly fitted their wrong labels; a model that never saw them has not
        assert out_of_sample[name] < in_sample[name] - 0.05
    assert all(out_of_sample[name] == in_sample[name] for name in validation)  # validation keeps the run's own
    without_data = invoke("inspect", tmp_path / "run", "--audit", tmp_path / "audit")  # it would rank nothing
    assert without_data.exit_code == 1 and "give the data too" in without_data.output


@pytest.mark.parametrize("label", ["nan", "inf", "0.5;0.2", "high"])
def test_a_relabel_that_is_not_a_finite_number_stops_a_regression(label: str):
    """A decision's new value is read as a label CSV's is: 'nan' or 'inf' would train on a target that is no number."""
    from vistrain.data.datasets import parse_label
    from vistrain.data.samples import DataError

    assert parse_label("0.25", "regression", ["value"], "decisions.csv") == (0.25,)
    with pytest.raises(DataError, match="is not 1 number"):
        parse_label(label, "regression", ["value"], "decisions.csv")


# ---- hostile audits (issue 26) ----


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory) -> Path:
    """100 of scikit-learn's 8 x 8 digits as PNGs, even and odd as two classes: the backbone sees near-identical
    blurs, so most of them are near duplicates of each other."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits") / "data"
    for i in range(100):
        folder = root / ("even", "odd")[digits.target[i] % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_near_duplicates_are_grouped_one_row_per_image(tiny_digits: Path, tmp_path: Path):
    result = invoke("audit", tiny_digits, "--out", tmp_path / "audit")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "audit" / "audit.csv")))
    duplicates = [row for row in rows if row["kind"].startswith("duplicate")]
    assert len(duplicates) >= 30  # many images are in some group ...
    assert len({row["file"] for row in duplicates}) == len(duplicates) <= 100  # ... once each, not once per pair
    groups = {row["group"] for row in duplicates}
    assert all(group.isdigit() for group in groups) and len(groups) < len(duplicates)
    assert (tmp_path / "audit" / "audit.csv").stat().st_size < 300 * 100  # bytes: a row per image at most


def test_the_audit_page_shows_at_most_its_cap_per_kind_and_counts_the_rest(tmp_path: Path):
    from vistrain.analysis.audit import Audit, Finding
    from vistrain.analysis.audit_report import MAX_SHOWN, write_audit
    from vistrain.model.predictions import Predictions

    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    findings = [Finding(image, "a", "", "duplicate", 1.0, "train", f"group 1 of {MAX_SHOWN + 57}", 1)] * \
        (MAX_SHOWN + 57)
    predictions = Predictions([image], np.array([0]), np.array([[1.0, 0.0]]), ["a", "b"], "binary")
    write_audit(tmp_path / "audit", Audit(findings, predictions, ("accuracy", 1, 1, 1), 2, np.zeros(1)), "data")
    page = (tmp_path / "audit" / "audit.html").read_text()
    assert page.count('<figure class="thumb') == MAX_SHOWN and "… and 57 more" in page
    assert len((tmp_path / "audit" / "audit.csv").read_text().splitlines()) == 1 + MAX_SHOWN + 57


def test_too_few_images_of_a_class_is_said_in_words_with_the_fix(tmp_path: Path):
    data = write_class_folders(tmp_path / "data", 3)
    for extra in sorted((data / "circle").iterdir())[1:]:
        extra.unlink()
    result = invoke("audit", data, "--out", tmp_path / "audit")
    assert result.exit_code == 1 and "class circle has 1 readable image(s)" in result.output
    assert "--folds" in result.output and "n_splits" not in result.output
