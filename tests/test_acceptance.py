"""Acceptance on the course's own real photos (../shared/datasets beside the project); skipped where absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from vistrain.api import train

CATS_VS_DOGS = SHARED_DATA / "cats-vs-dogs"


@pytest.mark.slow
@pytest.mark.skipif(not CATS_VS_DOGS.is_dir(), reason=f"{CATS_VS_DOGS} is not on this machine")
def test_default_training_on_cats_vs_dogs_reaches_98_5_percent(tmp_path: Path):
    result = train(CATS_VS_DOGS, out=tmp_path / "run")
    assert result.metrics["n_images"] == 500 and result.metrics["n_train"] == 500
    assert result.metrics["accuracy"] >= 0.985
    assert json.loads((tmp_path / "run" / "config.json").read_text())["classes"] == ["cat", "dog"]


@pytest.mark.slow
@pytest.mark.skipif(not CATS_VS_DOGS.is_dir(), reason=f"{CATS_VS_DOGS} is not on this machine")
def test_report_after_default_training_shows_both_classes_and_the_metrics(tmp_path: Path):
    result = train(CATS_VS_DOGS, out=tmp_path / "run")
    html = (tmp_path / "run" / "report.html").read_text()
    for list_name in ("most_confident", "least_confident", "confidently_wrong"):
        for name in ("cat", "dog"):
            assert f'data-list="{list_name}" data-class="{name}"' in html
    assert f"accuracy {result.metrics['accuracy']:.4f}" in html
    for name, m in result.metrics["per_class"].items():
        assert f"<td>{name}</td><td>{m['precision']:.4f}</td><td>{m['recall']:.4f}</td>" in html


FLAT = SHARED_DATA / "dogs-vs-cats-flat"


@pytest.mark.slow
@pytest.mark.skipif(not FLAT.is_dir(), reason=f"{FLAT} is not on this machine")
def test_split_the_kaggle_flat_folder_then_train(tmp_path: Path):
    from conftest import invoke

    split = invoke("split", FLAT, tmp_path / "data", "--per-class", "100")
    assert split.exit_code == 0, split.output
    result = train(tmp_path / "data", out=tmp_path / "run")
    assert result.metrics["n_images"] == 40 and result.metrics["accuracy"] >= 0.9


@pytest.mark.slow
@pytest.mark.skipif(not CATS_VS_DOGS.is_dir(), reason=f"{CATS_VS_DOGS} is not on this machine")
def test_check_lists_the_near_duplicates_in_cats_vs_dogs():
    from vistrain.data.check import check_dataset

    result = check_dataset(CATS_VS_DOGS)
    assert not result.unreadable
    pairs = {frozenset((p.a.path.name, p.b.path.name)) for p in result.pairs}
    assert frozenset(("dog.180.jpg", "dog.74.jpg")) in pairs


@pytest.mark.slow
def test_elpv_drives_all_four_tasks(tmp_path: Path):
    """The PyPI elpv solar cells, one shared seeded split: every task trains and reaches what was measured
    (benchmarks/elpv_tasks.py), less a margin."""
    from vistrain.data.demo import elpv_csv, elpv_root
    from vistrain.training.options import TrainOptions

    def metrics(task: str) -> dict:
        return train(elpv_csv(tmp_path, task), out=tmp_path / task, options=TrainOptions(task=task),
                     cache_dir=tmp_path / "cache", image_root=elpv_root()).metrics

    binary = metrics("binary")
    assert binary["accuracy"] >= 0.84 and binary["roc_auc"] >= 0.90
    assert metrics("multiclass")["accuracy"] >= 0.74
    multilabel = metrics("multilabel")
    assert multilabel["micro_f1"] >= 0.92
    assert multilabel["per_label"]["mono"]["f1"] >= 0.98 and multilabel["per_label"]["poly"]["f1"] >= 0.98
    regression = metrics("regression")
    assert regression["r2"] >= 0.5 and regression["mae"] <= 0.23
