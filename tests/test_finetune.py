"""--fine-tune: which layers train, what stays bit-identical, early stopping, resume, and that the run's predict and
export use the fine-tuned backbone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import invoke
from vistrain.training import fine_tune as fine_tune_module
from vistrain.model import tasks
from vistrain.backbones import get_backbone
from vistrain.deploy.export import deployed_model
from vistrain.features.inputs import prepare_image
from vistrain.core.files import sha256_file as file_digest
from vistrain.features.cache import FeatureCache
from vistrain.model.run_dir import BACKBONE_WEIGHTS, CHECKPOINT
from vistrain.training.engine import BestSoFar
from vistrain.training.fine_tune import FineTuned, fine_tune, unfreeze_last_blocks
from vistrain.model.heads import build_head
from vistrain.data.images import load_rgb
from vistrain.model.predictor import Predictor
from vistrain.training.options import TrainOptions
from vistrain.training.train import resume, train
from vistrain.features.transforms import eval_transform

BACKBONE = get_backbone("efficientnet_lite0")
TUNE_ARGS = ["--epochs", "3", "--fine-tune", "1", "--fine-tune-epochs", "2", "--batch-size", "16", "--seed", "1"]


def images(root: Path, per_class: int) -> tuple[list[Path], torch.Tensor]:
    paths = [p for kind in ("circle", "square") for p in sorted((root / kind).iterdir())[:per_class]]
    return paths, torch.tensor([int("square" in p.name) for p in paths])


def tune(train_root: Path, val_root: Path, best: BestSoFar | None = None, **settings):
    """fine_tune on a few shapes: a fresh pretrained extractor and a seeded linear head; returns (extractor, head,
    result, best)."""
    torch.manual_seed(0)
    extractor, head = BACKBONE.build_feature_extractor(), build_head("linear", BACKBONE.feature_dim, 1)
    best = best or BestSoFar()
    options = dict(blocks=1, epochs=1, batch_size=4, head_lr=1e-3, backbone_lr=1e-3, patience=3, seed=0) | settings
    result = fine_tune(extractor, head, images(train_root, 2), images(val_root, 1), "binary", BACKBONE.preprocess,
                       best=best, **options)
    return extractor, head, result, best


def test_unfreezing_sets_requires_grad_on_the_last_blocks_and_conv_head_only():
    model = BACKBONE.build_feature_extractor()
    assert unfreeze_last_blocks(model, 2) == ["blocks.5", "blocks.6", "conv_head", "bn2"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in model.named_parameters()
                         if name.startswith(("blocks.5.", "blocks.6.", "conv_head.", "bn2."))}
    assert "conv_stem.weight" not in trainable and "blocks.4.0.conv_pw.weight" not in trainable
    for n in (0, len(model.blocks) + 1):
        with pytest.raises(ValueError, match="choose 1 to 7"):
            unfreeze_last_blocks(model, n)


def test_training_mode_keeps_frozen_batchnorm_in_eval_mode():
    model = BACKBONE.build_feature_extractor()
    unfreeze_last_blocks(model, 1)
    tuned = FineTuned(model, build_head("mlp", BACKBONE.feature_dim, 1)).train()
    assert not model.bn1.training and not model.blocks[5][0].bn1.training
    assert model.blocks[6][0].bn1.training and model.bn2.training and tuned.head.training


def test_fine_tuning_changes_the_unfrozen_weights_only(shapes_split: Path):
    before = BACKBONE.build_feature_extractor().state_dict()
    extractor, _, result, _ = tune(shapes_split / "train", shapes_split / "val")
    after = extractor.state_dict()
    unfrozen = ("blocks.6.", "conv_head.", "bn2.")
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith(unfrozen) for key in changed)  # frozen weights and BN statistics: identical
    assert "conv_head.weight" in changed and "blocks.6.0.conv_pw.weight" in changed
    assert result.unfrozen == ["blocks.6", "conv_head", "bn2"] and len(result.history) == 1


def test_early_stopping_stops_and_restores_the_best_epoch(shapes_split: Path, monkeypatch):
    val_losses = iter([0.5, 0.3, 0.4, 0.6, 0.1, 0.1])
    states = []

    def scripted(model, loader, task, *args):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(val_losses), 1.0, torch.full((len(loader.dataset), 2), 0.5)

    monkeypatch.setattr(fine_tune_module, "evaluate_images", scripted)
    extractor, head, result, best = tune(shapes_split / "train", shapes_split / "val", epochs=6, patience=2)
    assert [r.val_loss for r in result.history] == [0.5, 0.3, 0.4, 0.6]  # two epochs without a lower loss: stop
    assert (best.phase, best.epoch, best.loss) == ("fine-tune", 2, 0.3) and result.improved
    final = FineTuned(extractor, head).state_dict()
    assert all(torch.equal(final[k], states[1][k]) for k in final)
    assert not all(torch.equal(final[k], states[3][k]) for k in final)


def test_a_fine_tuning_that_never_beats_the_frozen_head_changes_nothing(shapes_split: Path, monkeypatch):
    val_losses = iter([0.31, 0.35])

    def scripted(model, loader, task, *args):
        return next(val_losses), 1.0, torch.full((len(loader.dataset), 2), 0.5)

    monkeypatch.setattr(fine_tune_module, "evaluate_images", scripted)
    extractor, head = BACKBONE.build_feature_extractor(), build_head("linear", BACKBONE.feature_dim, 1)
    start_head = {k: v.clone() for k, v in head.state_dict().items()}
    best = BestSoFar(0.3, "frozen", 4, start_head, torch.zeros(2, 2))
    result = fine_tune(extractor, head, images(shapes_split / "train", 2), images(shapes_split / "val", 1), "binary",
                       BACKBONE.preprocess, blocks=1, epochs=2, batch_size=4, head_lr=1e-2, backbone_lr=1e-2,
                       patience=3, seed=0, best=best)
    assert len(result.history) == 2 and not result.improved
    assert (best.phase, best.epoch, best.loss) == ("frozen", 4, 0.3)  # still the frozen head's epoch
    pretrained = BACKBONE.build_feature_extractor().state_dict()
    assert all(torch.equal(value, pretrained[key]) for key, value in extractor.state_dict().items())
    assert all(torch.equal(value, start_head[key]) for key, value in head.state_dict().items())


@pytest.mark.slow
def test_train_discards_a_fine_tuning_that_does_not_beat_the_frozen_head(shapes_split: Path, tmp_path, monkeypatch):
    def worse(model, loader, task, *args):
        return 99.0, 0.0, torch.full((len(loader.dataset), 2), 0.5)

    monkeypatch.setattr(fine_tune_module, "evaluate_images", worse)
    result = invoke("train", shapes_split, "--out", tmp_path / "run", *TUNE_ARGS)
    assert result.exit_code == 0, result.output
    assert "did not beat the frozen head" in result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert not (tmp_path / "run" / BACKBONE_WEIGHTS).exists() and "sha256" not in config["fine_tune"]
    assert config["fine_tune"]["improved"] is False and metrics["best_epoch"] <= 3  # a frozen epoch
    history = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert [r["phase"] for r in history] == ["frozen"] * 3 + ["fine-tune"] * 2  # both phases still shown
    predictor = Predictor.from_run(tmp_path / "run")
    assert predictor.backbone.weights == BACKBONE.weights  # the pretrained backbone


@pytest.fixture(scope="module")
def tuned_run(shapes_split: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "run"
    result = invoke("train", shapes_split, "--out", out, *TUNE_ARGS)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_the_run_records_and_predicts_with_its_fine_tuned_backbone(tuned_run: Path, shapes_split: Path, tmp_path):
    config = json.loads((tuned_run / "config.json").read_text())
    assert config["fine_tune"]["sha256"] == file_digest(tuned_run / BACKBONE_WEIGHTS)
    assert config["fine_tune"]["unfrozen"] == ["blocks.6", "conv_head", "bn2"]
    history = list(csv.DictReader(open(tuned_run / "history.csv")))
    assert [(r["epoch"], r["phase"]) for r in history] == [
        ("1", "frozen"), ("2", "frozen"), ("3", "frozen"), ("4", "fine-tune"), ("5", "fine-tune")]

    predictor = Predictor.from_run(tuned_run)
    assert config["fine_tune"]["sha256"] in predictor.backbone.weights
    assert (FeatureCache(tmp_path, predictor.backbone, predictor.preprocess).path
            != FeatureCache(tmp_path, BACKBONE, predictor.preprocess).path)
    val = sorted((shapes_split / "val").rglob("*.png"))
    outputs = predictor.predict(val, show_progress=False).outputs

    extractor = BACKBONE.build_feature_extractor()
    extractor.load_state_dict(load_file(tuned_run / BACKBONE_WEIGHTS))
    model = FineTuned(extractor, predictor.head).eval()
    transform = eval_transform(predictor.preprocess)
    with torch.no_grad():
        direct = tasks.outputs("binary", model(torch.stack([transform(load_rgb(p)) for p in val]))).numpy()
        exported = deployed_model(predictor)(  # what `vistrain export` writes
            torch.from_numpy(np.stack([prepare_image(p, predictor.preprocess) for p in val]))).numpy()
    assert outputs == pytest.approx(direct, abs=1e-4)
    assert exported == pytest.approx(direct, abs=1e-4)
    saved = {r["file"]: float(r["prob_square"]) for r in csv.DictReader(open(tuned_run / "predictions.csv"))}
    assert outputs[:, 1] == pytest.approx([saved[str(p)] for p in val], abs=1e-4)  # train's validation outputs
    pretrained = Predictor(predictor.config, predictor.head, BACKBONE).predict(val, show_progress=False).outputs
    assert np.abs(pretrained - outputs).max() > 1e-3  # the pretrained backbone would predict otherwise


@pytest.mark.slow
def test_interrupted_fine_tuning_resumes_to_the_same_result(tuned_run: Path, shapes_split: Path, tmp_path, monkeypatch):
    from vistrain.training.checkpoint import Checkpoint

    original = Checkpoint.save_phase

    def interrupt_after_first_fine_tune_epoch(self, name: str, state: dict) -> None:
        original(self, name, state)
        if name == "fine-tune" and len(state["history"]) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save_phase", interrupt_after_first_fine_tune_epoch)
    options = TrainOptions(epochs=3, fine_tune=1, fine_tune_epochs=2, batch_size=16, seed=1)
    with pytest.raises(KeyboardInterrupt):
        train(shapes_split, tmp_path / "run", options)
    assert (tmp_path / "run" / CHECKPOINT).is_file() and not (tmp_path / "run" / "config.json").exists()
    monkeypatch.setattr(Checkpoint, "save_phase", original)
    resume(tmp_path / "run")
    assert (tmp_path / "run" / "history.csv").read_text() == (tuned_run / "history.csv").read_text()
    assert file_digest(tmp_path / "run" / BACKBONE_WEIGHTS) == file_digest(tuned_run / BACKBONE_WEIGHTS)
