"""A damaged run, cache or option gives one clear line naming the file and what is wrong, never a traceback; damaged
caches are rebuilt. Each test copies the trained `run` (or the session's feature cache) and damages the copy."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import pytest
import torch

from conftest import invoke, kill_when, shape_image
from test_resume import epochs_done
from vistrain.backbones import get_backbone
from vistrain.core.files import sha256_file
from vistrain.model import run_dir
from vistrain.training.checkpoint import FORMAT, Checkpoint
from vistrain.training.options import TrainOptions


@pytest.fixture
def copy(run: Path, tmp_path: Path) -> Path:
    """A copy of the trained run, to damage."""
    return Path(shutil.copytree(run, tmp_path / "copy"))


@pytest.fixture
def no_server(monkeypatch):
    """`serve` must fail before it listens: a server that starts fails the test instead of blocking it."""
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: pytest.fail("serve started on a damaged run"))


def fails_clearly(*args) -> str:
    """Run the command line; it must fail with exit code 1 and one line, no traceback. Returns that line."""
    result = invoke(*args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def commands(run: Path, shapes: Path, tmp_path: Path) -> dict[str, list]:
    """Every command that loads a run, with the arguments that make it load the model."""
    image = next((shapes / "val" / "circle").iterdir())
    return {"predict": ["predict", run, image], "evaluate": ["evaluate", run, shapes],
            "inspect": ["inspect", run, shapes / "train"],  # other images than the saved predictions': predicts
            "export": ["export", run, "--out", tmp_path / "model.onnx"], "serve": ["serve", run]}


def edit_config(change):
    def damage(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        change(config)
        (run / "config.json").write_text(json.dumps(config))
    return damage


def cut(name: str, keep: float):
    """Keep the first `keep` share of a file's bytes (0: an empty file)."""
    def damage(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: int(len(data) * keep)])
    return damage


DAMAGES = {  # name: (damage, the file the message names, what it says)
    "config-without-task": (edit_config(lambda c: c.pop("task")), "config.json", "no task"),
    "config-not-an-object": (lambda run: (run / "config.json").write_text("[1, 2]"), "config.json", "not an object"),
    "config-not-JSON": (lambda run: (run / "config.json").write_text('{"task": '), "config.json", "not valid JSON"),
    "unknown-task": (edit_config(lambda c: c.update(task="ranking")), "config.json", "unknown task 'ranking'"),
    "binary-with-3-classes": (edit_config(lambda c: c["classes"].append("triangle")), "config.json",
                          "a binary model has 2 classes, not 3"),
    "3-classes-on-a-binary-head": (edit_config(lambda c: c.update(task="multiclass",
                                                                    classes=["circle", "square", "triangle"])),
                                     "head.safetensors", "it has 1 output(s); 3 classes (multiclass) need 3"),
    "hidden-size": (edit_config(lambda c: c["head"].update(hidden=128)), "head.safetensors",
                    "hidden layer has 256 units, not 128"),
    "head-kind": (edit_config(lambda c: c["head"].update(kind="linear")), "head.safetensors",
                  "not those of a linear head"),
    "input-size-as-text": (edit_config(lambda c: c["preprocess"].update(input_size="224")), "config.json",
                           "preprocess.input_size is '224'"),
    "two-number-mean": (edit_config(lambda c: c["preprocess"].update(mean=[0.5, 0.5])), "config.json",
                        "preprocess.mean is [0.5, 0.5], not 3 numbers"),
    "unknown-interpolation": (edit_config(lambda c: c["preprocess"].update(interpolation="lanczos")), "config.json",
                              "preprocess.interpolation is 'lanczos'"),
    "unknown-backbone": (edit_config(lambda c: c["backbone"].update(name="no-such-net")), "config.json",
                         "unknown backbone 'no-such-net'"),
    "truncated-head": (cut("head.safetensors", 0.5), "head.safetensors", "is damaged"),
    "empty-head": (cut("head.safetensors", 0), "head.safetensors", "is damaged"),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "evaluate", "inspect", "export", "serve"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_run_is_one_clear_line(copy: Path, shapes_split: Path, tmp_path: Path, no_server, damage, command):
    change, file, words = DAMAGES[damage]
    change(copy)
    line = fails_clearly(*commands(copy, shapes_split, tmp_path)[command])
    assert str(copy / file) in line and words in line
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.slow
def test_saved_predictions_are_read_without_loading_the_model(copy: Path):
    """`inspect RUN` on its own validation images needs config.json, not the weights: a damaged config stops it."""
    cut("head.safetensors", 0)(copy)
    assert invoke("inspect", copy).exit_code == 0
    edit_config(lambda c: c.update(classes=["a", "b", "c"]))(copy)
    assert "config.json is damaged: a binary model has 2 classes, not 3" in fails_clearly("inspect", copy)


@pytest.fixture(scope="module")
def fine_tuned_run(run: Path, tmp_path_factory) -> Path:
    """The run made a fine-tuned one: backbone.safetensors (the pretrained extractor's weights) and its SHA-256."""
    tuned = Path(shutil.copytree(run, tmp_path_factory.mktemp("fine-tuned") / "run"))
    digest = run_dir.save_backbone(tuned, get_backbone("efficientnet_lite0").build_feature_extractor())
    edit_config(lambda c: c.update(fine_tune={"blocks": 1, "improved": True, **digest}))(tuned)
    return tuned


@pytest.fixture
def fine_tuned(fine_tuned_run: Path, tmp_path: Path) -> Path:
    """A copy of the fine-tuned run, to damage."""
    return Path(shutil.copytree(fine_tuned_run, tmp_path / "fine-tuned"))


@pytest.mark.slow
def test_a_fine_tuned_run_loads(fine_tuned: Path, shapes_split: Path, tmp_path: Path):
    assert invoke("export", fine_tuned, "--out", tmp_path / "model.onnx").exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "evaluate", "inspect", "export", "serve"])
@pytest.mark.parametrize("keep", [0.5, 0], ids=["truncated", "empty"])
def test_a_damaged_fine_tuned_backbone_is_one_clear_line(fine_tuned: Path, shapes_split: Path, tmp_path: Path,
                                                          no_server, keep, command):
    cut("backbone.safetensors", keep)(fine_tuned)
    line = fails_clearly(*commands(fine_tuned, shapes_split, tmp_path)[command])
    assert f"{fine_tuned / 'backbone.safetensors'} is damaged" in line


@pytest.mark.slow
@pytest.mark.parametrize("damage, words", [
    ("file,true\nx.png,circle\n", "is damaged: no column predicted, prob_circle, prob_square"),
    ("file,true,predicted,prob_circle,prob_square\nx.png,hexagon,circle,0.9,0.1\n", "row 1 cannot be read"),
    ("file,true,predicted,prob_circle,prob_square\nx.png,circle,circle,high,0.1\n", "row 1 cannot be read"),
    ("", "has no predictions"),
])
def test_damaged_saved_predictions_are_one_clear_line_and_data_predicts_again(copy: Path, shapes_split: Path,
                                                                              damage, words):
    (copy / "predictions.csv").write_text(damage)
    line = fails_clearly("inspect", copy)
    assert f"{copy / 'predictions.csv'} {words}" in line and "give `inspect` the images" in line
    result = invoke("inspect", copy, shapes_split)
    assert result.exit_code == 0 and "reused the saved predictions" not in result.stderr


@pytest.mark.slow
def test_missing_saved_predictions_are_one_clear_line(copy: Path):
    (copy / "predictions.csv").unlink()
    assert f"{copy} has no predictions.csv" in fails_clearly("inspect", copy)


@pytest.mark.slow
@pytest.mark.parametrize("name, damage, lost", [
    ("history.csv", "epoch,train_loss\n1,0.5\n", "training curves"),
    ("history.csv", "epoch,train_loss,val_loss\n1,0.5,0.4\n", "training curves"),
    ("history.csv", "epoch,train_loss,train_accuracy,val_loss,val_accuracy,phase\n1,0.5,high,0.4,0.9,frozen\n",
     "training curves"),
    ("skipped.csv", "path,why\nx.png,broken\n", "skipped files"),
])
def test_a_damaged_history_or_skipped_list_leaves_it_out_of_the_report(copy: Path, name, damage, lost):
    (copy / name).write_text(damage)
    result = invoke("inspect", copy)
    assert result.exit_code == 0, result.output
    assert f"warning: {copy / name} is damaged" in result.stderr and f"the report shows no {lost}" in result.stderr
    report = (copy / "report.html").read_text()
    assert ("training curves" not in report.lower()) if name == "history.csv" else "x.png" not in report


@pytest.mark.slow
def test_an_out_or_cache_dir_that_is_a_file_is_one_clear_line(run: Path, shapes_split: Path, tmp_path: Path):
    file = tmp_path / "notes.txt"
    file.write_text("a file")
    assert f"the run directory (--out) {file} is a file, not a folder" in fails_clearly(
        "train", shapes_split, "--out", file)
    assert f"the run directory (--out) {file / 'run'} cannot be made: {file} is a file" in fails_clearly(
        "train", shapes_split, "--out", file / "run")
    assert f"the feature cache {file} is a file, not a folder" in fails_clearly(
        "train", shapes_split, "--out", tmp_path / "out", "--cache-dir", file)
    image = next((shapes_split / "val" / "circle").iterdir())
    assert f"the feature cache {file} is a file, not a folder" in fails_clearly(
        "predict", run, image, "--cache-dir", file)
    assert f"the export's folder {file} is a file, not a folder" in fails_clearly(
        "export", run, "--out", file / "model.onnx")


@pytest.mark.slow
def test_export_makes_a_missing_out_folder(run: Path, tmp_path: Path):
    out = tmp_path / "new" / "deeper" / "model.onnx"
    assert invoke("export", run, "--out", out).exit_code == 0
    assert out.stat().st_size > 1_000_000


@pytest.mark.slow
def test_evaluate_on_only_unreadable_images_is_one_clear_line(run: Path, tmp_path: Path):
    for name in ("circle", "square"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    line = fails_clearly("evaluate", run, tmp_path / "data")
    assert f"none of the 2 image(s) in {tmp_path / 'data'} could be read; nothing to evaluate" in line


def cache_copy(feature_cache: Path, tmp_path: Path) -> Path:
    """A copy of the session's feature cache (the shapes' features and the backbone's ONNX export)."""
    return Path(shutil.copytree(feature_cache, tmp_path / "cache"))


def trains(shapes: Path, out: Path, cache: Path):
    result = invoke("train", shapes, "--out", out, "--cache-dir", cache, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file()
    return result


def features_computed(run: Path) -> int:
    """How many images' features the run computed (the rest came from the cache), as metrics.json records it."""
    return json.loads((run / "metrics.json").read_text())["timing"]["features_computed"]


@pytest.mark.slow
def test_a_feature_cache_that_is_not_sqlite_is_moved_aside_and_rebuilt(run: Path, feature_cache: Path,
                                                                      shapes_split: Path, tmp_path: Path):
    cache = cache_copy(feature_cache, tmp_path)
    databases = sorted(cache.glob("features-*.sqlite"))
    for database in databases:
        database.write_bytes(b"garbage" * 1000)
    result = trains(shapes_split, tmp_path / "out", cache)
    assert "is damaged (file is not a database); moved it to" in result.stderr
    assert features_computed(tmp_path / "out") == 48
    rebuilt = [d for d in databases if Path(f"{d}.damaged").is_file()]
    assert len(rebuilt) == 1
    with sqlite3.connect(rebuilt[0]) as db:
        assert db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == 48


@pytest.mark.slow
def test_feature_vectors_of_the_wrong_size_are_computed_again(run: Path, feature_cache: Path, shapes_split: Path,
                                                              tmp_path: Path):
    cache = cache_copy(feature_cache, tmp_path)
    digests = [sha256_file(p) for p in sorted((shapes_split / "train" / "square").iterdir())[:3]]
    for database in cache.glob("features-*.sqlite"):
        with sqlite3.connect(database) as db:
            db.execute(f"UPDATE features SET vector = x'0000' WHERE digest IN ({','.join('?' * 3)})", digests)
    result = trains(shapes_split, tmp_path / "out", cache)
    assert "3 feature vector(s) in" in result.stderr and "have the wrong size; computing them again" in result.stderr
    assert features_computed(tmp_path / "out") == 3
    trains(shapes_split, tmp_path / "again", cache)
    assert features_computed(tmp_path / "again") == 0


@pytest.mark.slow
def test_a_damaged_onnx_export_is_exported_again(run: Path, feature_cache: Path, tmp_path: Path):
    cache = cache_copy(feature_cache, tmp_path)
    exports = list(cache.glob("backbone-*.onnx"))
    for path in exports:
        path.write_bytes(path.read_bytes()[:3000])
    shape_image("circle", seed=7777).save(tmp_path / "new.png")  # not cached: the backbone must run
    result = invoke("predict", run, tmp_path / "new.png", "--cache-dir", cache, "--format", "json")
    assert result.exit_code == 0, result.output
    assert "cannot be loaded (InvalidProtobuf); exporting the backbone again" in result.stderr
    assert "with torch instead" not in result.stderr
    assert json.loads(result.stdout)[0]["class"] == "circle"
    assert sum(path.stat().st_size > 1_000_000 for path in exports) == 1  # the one predict uses, whole again


def checkpoint_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign object"])
def test_a_damaged_checkpoint_is_one_clear_line_without_unsafe_advice(shapes_split: Path, tmp_path: Path, damage):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    job = {"data": str(shapes_split), "image_root": None, "options": asdict(TrainOptions())}
    Checkpoint(unfinished, job).save()
    path = unfinished / "checkpoint.pt"
    good = path.read_bytes()
    path.write_bytes({"garbage": b"not a checkpoint" * 100, "truncated": good[: len(good) // 2],
                      # torch's own message for this one advises weights_only=False: never pass that on
                      "foreign object": checkpoint_bytes({"format": FORMAT, "job": job, "when": datetime.now()}),
                      }[damage])
    line = fails_clearly("train", "--resume", unfinished)
    assert f"{path} is damaged and cannot be resumed" in line and "weights_only" not in line


@pytest.mark.slow
def test_resume_after_overwrite_and_kill_continues_the_new_run(run: Path, shapes_split: Path, tmp_path: Path):
    """`--overwrite` removes the finished run's config.json before the new run starts, so a new run killed with
    SIGKILL is resumed rather than taken for the old, complete one."""
    target = Path(shutil.copytree(run, tmp_path / "run"))
    process = subprocess.Popen([sys.executable, "-m", "vistrain", "train", str(shapes_split), "--out", str(target),
                                "--overwrite", "--epochs", "30", "--batch-size", "4", "--seed", "3"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = target / "checkpoint.pt"
    kill_when(process, lambda: checkpoint.is_file() and checkpoint.stat().st_size > 1_000_000)  # an epoch's weights
    done = epochs_done(target)
    if not 0 < done < 30:
        pytest.fail(f"could not interrupt the new run mid-training (epochs done: {done})")
    assert process.returncode == -9 and not (target / "config.json").exists()

    resumed = invoke("train", "--resume", target)
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {target} after epoch {done}" in resumed.stderr.replace("\n", "")
    config = json.loads((target / "config.json").read_text())
    assert config["training"]["epochs"] == 30 and config["training"]["batch_size"] == 4
    assert len((target / "history.csv").read_text().splitlines()) == 1 + 30
