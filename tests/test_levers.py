"""Levers for images far from ImageNet: the logistic head (strength chosen by cross-validation on the training
images, multi-class decisions tuned for macro F1) and features from several depths of the backbone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import invoke, shape_image
from vistrain.backbones import get_backbone
from vistrain.backbones.multi_depth import with_stages
from vistrain.core.errors import OptionError
from vistrain.deploy.export import deployed_model
from vistrain.features.inputs import prepare_image
from vistrain.features.cache import FeatureCache
from vistrain.features.extract import extract_features
from vistrain.model import linear
from vistrain.model.linear import C_GRID, decision_offsets, fit_linear
from vistrain.model.predictor import Predictor

LITE0 = get_backbone("efficientnet_lite0")


@pytest.mark.slow
def test_logistic_head_trains_in_closed_form_and_predicts_as_it_validated(shapes_split: Path, tmp_path: Path,
                                                                           monkeypatch):
    rows_seen = []
    original = linear.choose_strength
    monkeypatch.setattr(linear, "choose_strength", lambda x, *a: rows_seen.append(len(x)) or original(x, *a))
    result = invoke("train", shapes_split, "--out", tmp_path / "run", "--head", "logistic")
    assert result.exit_code == 0, result.output
    assert rows_seen == [32]  # the strength is chosen on the 32 training images only, never on validation
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["head"]["kind"] == "logistic" and config["head"]["fit"]["strength"] in C_GRID
    history = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert len(history) == 1 and json.loads((tmp_path / "run" / "metrics.json").read_text())["accuracy"] == 1.0
    predictor = Predictor.from_run(tmp_path / "run")
    val = sorted((shapes_split / "val").rglob("*.png"))
    outputs = predictor.predict(val, show_progress=False).outputs
    saved = {r["file"]: float(r["prob_square"]) for r in csv.DictReader(open(tmp_path / "run" / "predictions.csv"))}
    assert outputs[:, 1] == pytest.approx([saved[str(p)] for p in val], abs=1e-4)  # standardisation inside the head
    with torch.no_grad():
        exported = deployed_model(predictor)(
            torch.from_numpy(np.stack([prepare_image(p, predictor.preprocess) for p in val]))).numpy()
    assert exported == pytest.approx(outputs, abs=1e-4)


def test_decision_offsets_raise_macro_f1_on_a_rare_class():
    rng = np.random.default_rng(0)
    targets = np.array([0] * 80 + [1] * 15 + [2] * 5)
    logits = rng.normal(size=(100, 3)) * 0.7
    logits[np.arange(100), targets] += 2.0  # informative, but the rare class is rarely on top
    logits[:, 2] -= 2.0
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    offsets = decision_offsets(probabilities, targets)
    from sklearn.metrics import f1_score

    before = f1_score(targets, probabilities.argmax(1), average="macro")
    after = f1_score(targets, (np.log(probabilities) + offsets).argmax(1), average="macro")
    assert offsets[0] == 0 and offsets[2] > 0 and after > before + 0.05


def test_multiclass_logistic_fit_keeps_its_offsets_in_the_bias():
    """The logistic head decides as the tuned rule does: its predictions are argmax(log p + offsets), where p is the
    plain logistic regression's probabilities, and here the offsets change some of them."""
    from vistrain.model.heads import build_head
    from vistrain.training.engine import BestSoFar
    from vistrain.training.linear_head import fit_logistic_head

    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 8))
    targets = (x[:, 0] > 0).astype(int) + (x[:, 1] > 1.2).astype(int)
    fit = fit_linear(x, targets, "multiclass", tune_offsets=True)
    assert fit.offsets is not None and fit.offsets.shape == (3,) and fit.weight.shape == (3, 8)
    logs = np.log(linear._outputs(fit.scaling(x), fit.weight, fit.bias, "multiclass"))
    tuned = (logs + fit.offsets).argmax(1)
    assert (tuned != logs.argmax(1)).sum() >= 3  # the offsets matter on these images

    head = build_head("logistic", 8, 3).double()
    features, labels = torch.from_numpy(x), torch.from_numpy(targets)
    _, details = fit_logistic_head(head, (features, labels), (features, labels), "multiclass", 0, BestSoFar())
    assert details["decision_offsets"] == pytest.approx(fit.offsets.tolist())
    assert head[1].bias.detach().numpy() == pytest.approx(fit.bias + fit.offsets)
    with torch.no_grad():
        assert head(features).argmax(1).numpy().tolist() == tuned.tolist()
    assert fit_linear(x, (x[:, 0] > 0).astype(int), "binary").weight.shape == (1, 8)
    assert fit_linear(x, x[:, :2], "regression").weight.shape == (2, 8)


def test_features_from_several_depths_extend_the_plain_features(tmp_path: Path):
    deep = with_stages(LITE0, (3, 4, 5, 6))
    assert deep.feature_dim == 1280 + 80 + 112 + 192 + 320 and deep.weights != LITE0.weights
    paths = []
    for i, kind in enumerate(("circle", "square")):
        paths.append(tmp_path / f"{kind}.png")
        shape_image(kind, seed=i).save(paths[-1])
    plain = extract_features(paths, LITE0, LITE0.preprocess, tmp_path, show_progress=False)
    several = extract_features(paths, deep, deep.preprocess, tmp_path, show_progress=False)
    assert several.vectors.shape == (2, deep.feature_dim) and several.computed == 2
    assert np.abs(several.vectors[:, -1280:] - plain.vectors).max() < 1e-4  # the final features, unchanged
    again = extract_features(paths, deep, deep.preprocess, tmp_path, show_progress=False)
    assert again.computed == 0 and np.array_equal(again.vectors, several.vectors)  # cached, apart from the plain ones
    assert FeatureCache(tmp_path, deep, deep.preprocess).path != FeatureCache(tmp_path, LITE0, LITE0.preprocess).path
    with pytest.raises(OptionError, match="^feature_stages 7: efficientnet_lite0 has stages 0 to 6"):
        with_stages(LITE0, (7,))


@pytest.mark.slow
def test_a_run_with_several_depths_predicts_with_them(shapes_split: Path, tmp_path: Path):
    """`predict`, computing the features afresh (an empty cache), gives each validation image the class and the
    probabilities the run recorded for it when it trained on the features of several depths."""
    result = invoke("train", shapes_split, "--out", tmp_path / "run", "--feature-stages", "4,6", "--epochs", "5")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["backbone"]["stages"] == [4, 6] and config["backbone"]["feature_dim"] == 1280 + 112 + 320
    predicted = invoke("predict", tmp_path / "run", shapes_split / "val", "--format", "json", "--cache-dir",
                       tmp_path / "empty-cache")
    assert predicted.exit_code == 0, predicted.output
    rows = {row["file"]: row for row in json.loads(predicted.stdout)}
    recorded = {row["file"]: row for row in csv.DictReader(open(tmp_path / "run" / "predictions.csv"))}
    assert sorted(rows) == sorted(recorded) and len(rows) == 16
    for file, row in rows.items():
        assert row["class"] == recorded[file]["predicted"] == Path(file).parent.name
        assert dict(row["top"]) == pytest.approx({name: float(recorded[file][f"prob_{name}"])
                                                 for name in ("circle", "square")}, abs=1e-4)
    bad = invoke("train", shapes_split, "--out", tmp_path / "bad", "--feature-stages", "x")
    assert bad.exit_code != 0 and "stage numbers" in bad.output


def test_logistic_regression_head_predicts_in_the_targets_own_units():
    """Ridge learns the targets in the units of the head's Rescale, which maps them back: on an exactly linear
    target its predictions are the target shrunk a little towards the mean, never stretched (standardising twice,
    by n and by n - 1, stretched them by sqrt(n / (n - 1)): 4.4% on 12 images)."""
    from vistrain.model.heads import build_head
    from vistrain.training.engine import BestSoFar
    from vistrain.training.linear_head import fit_logistic_head

    x = torch.from_numpy(np.random.default_rng(0).normal(size=(12, 1)))
    y = 2 * x + 3
    head = build_head("logistic", 1, 1, 0, 0.0, rescale=True).double()
    head[-1].fit(y)
    fit_logistic_head(head, (x, y), (x, y), "regression", 0, BestSoFar())
    with torch.no_grad():
        spread = float((head(x) - y.mean()).norm() / (y - y.mean()).norm())
    assert 0.98 < spread <= 1.0
