"""`vistrain inspect`, the HTML report (checked in a real browser) and `vistrain augment-preview`."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vistrain
from conftest import invoke, shape_image
from vistrain.backbones import get_backbone
from vistrain.features.transforms import Augmentation, eval_transform, train_transform

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def run(run: Path, tmp_path_factory) -> Path:
    """A copy of the shared run: `inspect` rewrites its report and CSV files, which other modules assert on."""
    copy = tmp_path_factory.mktemp("inspected") / "shapes"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.slow
def test_inspect_reuses_saved_predictions_and_writes_ranked_csvs(run: Path):
    result = invoke("inspect", run, "--top", "3")
    assert result.exit_code == 0
    most = rows(run / "inspect_most_confident.csv")
    assert {r["class"] for r in most} == {"circle", "square"}
    for name in ("circle", "square"):
        ranked = [r for r in most if r["class"] == name]
        assert 1 <= len(ranked) <= 3
        assert all(r["predicted"] == name for r in ranked)
        probabilities = [float(r["probability"]) for r in ranked]
        assert probabilities == sorted(probabilities, reverse=True)
    assert all(r["true"] != r["predicted"] for r in rows(run / "inspect_confidently_wrong.csv"))
    assert len(rows(run / "inspect_label_errors.csv")) == 3
    assert "most confident: predicted circle" in result.stdout
    assert vistrain.inspect(run, top=3, show_progress=False).reused_predictions


@pytest.mark.slow
def test_inspect_says_when_a_list_is_short(run: Path):
    result = invoke("inspect", run, "--top", "50")
    assert re.search(r"only \d+ of 50", result.stdout)


@pytest.mark.slow
def test_inspect_on_the_same_validation_folder_reuses_predictions(run: Path, shapes_split: Path):
    assert vistrain.inspect(run, data=shapes_split, top=2, show_progress=False).reused_predictions


@pytest.mark.slow
def test_inspect_on_other_images_predicts_them(run: Path, shapes_split: Path):
    assert not vistrain.inspect(run, data=shapes_split / "train", top=2, show_progress=False).reused_predictions
    files = {Path(r["file"]).parent.parent.name for r in rows(run / "inspect_label_errors.csv")}
    assert files == {"train"}
    invoke("inspect", run)  # back to the report on the validation images for the next tests


@pytest.mark.slow
def test_report_is_self_contained_and_matches_metrics(run: Path):
    invoke("inspect", run)
    html = (run / "report.html").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.4f}" in html
    for name, m in metrics["per_class"].items():
        assert f"<td>{name}</td><td>{m['precision']:.4f}</td><td>{m['recall']:.4f}</td>" in html
    for title in ("Most confident", "Least confident", "Confidently wrong", "Possible label errors",
                  "Calibration", "Skipped files"):
        assert title in html
    assert "http://" not in html and "https://" not in html  # nothing fetched from a CDN
    assert html.count('src="data:image/jpeg;base64,') >= 4  # thumbnails embedded
    assert html.count('src="data:image/png;base64,') == 4  # confusion, curves, reliability, coverage
    assert "expected calibration error" in html


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`apt-get install chromium`)")
def test_report_opens_in_a_real_browser_without_errors(run: Path, tmp_path: Path):
    playwright = pytest.importorskip("playwright.sync_api")
    invoke("inspect", run)
    problems: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto((run / "report.html").resolve().as_uri())
        loaded = page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
        total = page.evaluate("document.images.length")
        page.locator("[data-list=most_confident]").first.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "report.png"))
        browser.close()
    assert problems == []
    assert total > 4 and loaded == total
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"))
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 500  # photos on screen, not only text and lines


def test_augment_preview_shows_each_image_beside_different_augmented_views(shapes_split: Path, tmp_path: Path,
                                                                          monkeypatch):
    from vistrain.analysis import plots
    from vistrain.data.images import load_rgb

    drawn = []
    original = plots.image_grid
    monkeypatch.setattr(plots, "image_grid", lambda rows, titles: drawn.append(rows) or original(rows, titles))
    out = tmp_path / "grid.png"
    result = invoke("augment-preview", shapes_split, "--out", out, "--images", "2", "--views", "3")
    assert result.exit_code == 0
    grid = Image.open(out)
    assert grid.width > grid.height  # 4 columns, 2 rows
    assert "'rotation': 20.0" in result.stderr
    (rows,) = drawn
    assert [len(row) for row in rows] == [4, 4]
    plain = eval_transform(get_backbone("efficientnet_lite0").preprocess, output="uint8")
    training_images = [load_rgb(p) for p in sorted((shapes_split / "train").rglob("*.png"))]
    for original_view, *augmented in rows:
        # the first column is a training image as validation sees it, the others differ from it and from each other
        assert any(np.array_equal(original_view, plain(image).permute(1, 2, 0).numpy()) for image in training_images)
        assert all(not np.array_equal(view, original_view) for view in augmented)
        assert not np.array_equal(augmented[0], augmented[1])


def test_augmentation_changes_training_images_only():
    preprocess = get_backbone("efficientnet_lite0").preprocess
    image = shape_image("square", seed=3)
    torch.manual_seed(0)
    augmented = [train_transform(preprocess, Augmentation())(image) for _ in range(3)]
    plain = [eval_transform(preprocess)(image) for _ in range(2)]
    assert augmented[0].shape == plain[0].shape == (3, 224, 224)
    assert not torch.allclose(augmented[0], augmented[1])
    assert torch.equal(plain[0], plain[1])
    no_change = Augmentation(rotation=0, shift=0, zoom=0, flip=False)
    assert torch.allclose(train_transform(preprocess, no_change)(image), plain[0], atol=1e-5)


@pytest.mark.slow
def test_a_run_trained_on_a_relative_path_is_read_alike_from_any_folder(shapes_split: Path, tmp_path: Path,
                                                                        monkeypatch):
    """predictions.csv names its images absolutely: `inspect` (and `export --int8`) run from another folder find
    them, where a path relative to the training folder would point at nothing."""
    monkeypatch.chdir(shapes_split.parent)
    out = tmp_path / "relative-run"
    assert invoke("train", shapes_split.name, "--out", out, "--epochs", "2").exit_code == 0
    monkeypatch.chdir(tmp_path)
    listed = [Path(row["file"]) for row in rows(out / "predictions.csv")]
    assert listed and all(path.is_absolute() and path.is_file() for path in listed)
    assert vistrain.inspect(out, top=2, show_progress=False).reused_predictions
    assert all(Path(row["file"]).is_file() for row in rows(out / "inspect_most_confident.csv"))
