"""The ranked lists, label-error candidates, calibration and coverage, on hand-made predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vistrain.analysis.ranking import coverage, label_errors, ranked_lists, reliability
from vistrain.model.predictions import Predictions


def predictions(rows: list[tuple[str, int, float]]) -> Predictions:
    """rows of (file, true label, probability of class 1) for two classes a/b."""
    p1 = np.array([r[2] for r in rows])
    return Predictions([Path(r[0]) for r in rows], np.array([r[1] for r in rows]),
                       np.stack([1 - p1, p1], axis=1), ["a", "b"])


SAMPLE = predictions([
    ("a1", 0, 0.01), ("a2", 0, 0.30), ("a3", 0, 0.55), ("a4", 0, 0.95),  # a3, a4 predicted b (wrong)
    ("b1", 1, 0.99), ("b2", 1, 0.60), ("b3", 1, 0.20),                   # b3 predicted a (wrong)
])


def names(entries) -> list[str]:
    return [e.file.name for e in entries]


def test_most_confident_ranks_by_probability_of_the_predicted_class():
    lists = ranked_lists(SAMPLE, top=10)
    assert names(lists["most_confident"]["a"]) == ["a1", "b3", "a2"]
    assert names(lists["most_confident"]["b"]) == ["b1", "a4", "b2", "a3"]


def test_least_confident_starts_at_the_decision_boundary():
    lists = ranked_lists(SAMPLE, top=2)
    assert names(lists["least_confident"]["a"]) == ["a2", "b3"]
    assert names(lists["least_confident"]["b"]) == ["a3", "b2"]


def test_confidently_wrong_holds_only_wrong_predictions_most_confident_first():
    lists = ranked_lists(SAMPLE, top=10)
    assert names(lists["confidently_wrong"]["b"]) == ["a4", "a3"]
    assert names(lists["confidently_wrong"]["a"]) == ["b3"]
    assert all(e.true != e.predicted for e in lists["confidently_wrong"]["b"])


def test_label_errors_rank_by_the_probability_of_the_given_label():
    errors = label_errors(SAMPLE, top=3)
    assert names(errors) == ["a4", "b3", "a3"]
    assert errors[0].label_probability == pytest.approx(0.05)


def test_a_perfectly_calibrated_model_has_zero_ece():
    # 10 images at confidence 0.8, 8 of them right
    p = predictions([(f"x{i}", 1 if i < 8 else 0, 0.8) for i in range(10)])
    result = reliability(p)
    assert result["ece"] == pytest.approx(0.0, abs=1e-9)
    assert result["bins"][0]["count"] == 10


def test_an_overconfident_model_has_the_gap_as_ece():
    p = predictions([(f"x{i}", 1 if i < 5 else 0, 0.9) for i in range(10)])  # 90% sure, 50% right
    assert reliability(p)["ece"] == pytest.approx(0.4)


def test_coverage_finds_the_lowest_threshold_reaching_the_target():
    result = coverage(SAMPLE, target_accuracy=0.99)
    by_threshold = {r["threshold"]: r for r in result["rows"]}
    assert by_threshold[0.0]["kept"] == 1.0 and by_threshold[0.0]["accuracy"] == pytest.approx(4 / 7)
    # a4 (wrong) is 0.95 sure: only b1 and a1 (both right, 0.99 sure) are kept from 0.96 up
    assert result["lowest_threshold_reaching_target"]["threshold"] == pytest.approx(0.96)
    assert result["lowest_threshold_reaching_target"]["kept"] == pytest.approx(2 / 7)
