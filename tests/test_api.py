"""The Python API as a user holds it: `vistrain.load(run)` once, then `predict` on files, PIL images and arrays, each
prediction with class names and probabilities; a quiet `train` whose progress comes through `on_epoch` and the
`vistrain` logger; keyword-only arguments; one way to give settings."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vistrain
from conftest import shape_image, write_class_folders
from test_tasks import drawings  # noqa: F401 (a fixture)
from vistrain.core.errors import OptionError
from vistrain.data.samples import DataError


@pytest.fixture(scope="module")
def model(run: Path) -> vistrain.Model:
    return vistrain.load(run, device="cpu")


@pytest.mark.slow
def test_a_prediction_names_its_class_with_the_probabilities(model, shapes_split: Path):
    path = shapes_split / "val" / "circle" / "circle_0.png"
    prediction = model.predict(path)
    assert model.classes == ["circle", "square"] and model.task == "binary"
    assert prediction.label == "circle" and prediction.path == path
    assert set(prediction.probabilities) == {"circle", "square"}
    assert prediction.probability == prediction.probabilities["circle"] == max(prediction.probabilities.values())
    assert sum(prediction.probabilities.values()) == pytest.approx(1)


@pytest.mark.slow
def test_images_in_memory_are_predicted_as_the_same_images_saved_as_png(model, tmp_path: Path):
    image = shape_image("square", seed=7)
    pixels = np.asarray(image)
    grey = np.asarray(image.convert("L"))
    given = [image, pixels, pixels.astype(np.float64) / 255, grey, grey[:, :, None]]
    saved = []
    for i, item in enumerate([image, image, image, Image.fromarray(grey), Image.fromarray(grey)]):
        saved.append(tmp_path / f"{i}.png")
        item.save(saved[-1])
    in_memory, from_files = model.predict(given), model.predict(saved)
    assert len(in_memory) == len(from_files) == 5 and not in_memory.skipped
    for memory, file in zip(in_memory, from_files):
        assert memory.label == file.label and memory.path is None and file.path is not None
        assert memory.probabilities == file.probabilities  # the same features: exactly equal
    assert in_memory[0].label == "square"
    batch = model.predict(np.stack([pixels, np.asarray(shape_image("circle", seed=8))]))
    assert [p.label for p in batch] == ["square", "circle"]


@pytest.mark.slow
def test_unreadable_files_are_skipped_in_a_list_and_refused_alone(model, tmp_path: Path, shapes_split: Path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    good = shapes_split / "val" / "square" / "square_0.png"
    predictions = model.predict([bad, good])
    assert [p.path for p in predictions] == [good] and [s.path for s in predictions.skipped] == [bad]
    with pytest.raises(DataError, match="bad.png"):
        model.predict(bad)
    folder = model.predict(shapes_split / "val" / "circle")
    assert len(folder) == 8 and {p.label for p in folder} == {"circle"}
    assert model.predict([]) == []


@pytest.mark.parametrize("pixels, why", [(np.zeros((4, 4, 2), np.uint8), "HxW"), (np.full((4, 4), 2.0), r"\[0, 1\]"),
                                         (np.zeros((4, 4), np.uint16), "uint16")])
def test_arrays_that_are_not_images_are_refused(pixels, why, tmp_path: Path):
    from vistrain.model.loaded import save_png

    with pytest.raises(ValueError, match=why):
        save_png(pixels, tmp_path / "x.png")


@pytest.mark.slow
def test_the_api_trains_quietly_and_tells_each_epoch(tmp_path: Path, capfd, caplog, monkeypatch):
    data = write_class_folders(tmp_path / "data", 8)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    capfd.readouterr()
    epochs = []
    with caplog.at_level(logging.INFO, logger="vistrain"):
        result = vistrain.train(data, out=tmp_path / "run", epochs=3, head="mlp", cache_dir=tmp_path / "cache",
                                on_epoch=epochs.append)
    assert capfd.readouterr() == ("", "")
    assert [r.epoch for r in epochs] == [1, 2, 3] and epochs == result.history
    said = [record.getMessage() for record in caplog.records]
    assert any(line.startswith("epoch   3/3") for line in said) and any(line.startswith("report: ") for line in said)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "run", "work"]
    assert list(work.iterdir()) == []
    assert not hasattr(result, "is_main")
    prediction = result.load(device="cpu").predict(data / "circle" / "circle_0.png")
    assert prediction.label == "circle"


@pytest.mark.slow
def test_multilabel_and_regression_predictions(drawings: Path, tmp_path: Path):
    tagged = vistrain.train(drawings / "labels.csv", out=tmp_path / "tagged", epochs=30, seed=1).load()
    prediction = tagged.predict(np.asarray(Image.open(drawings / "d0.png")))  # a light circle
    assert tagged.task == "multilabel" and set(prediction.probabilities) == {"circle", "light", "square"}
    assert set(prediction.label.split(";")) == {"circle", "light"} and prediction.probability is None
    assert tagged.predict(drawings / "d0.png", threshold=0).label == "circle;light;square"
    sized = vistrain.train(drawings / "sizes.csv", out=tmp_path / "sized", epochs=30, seed=1).load()
    value = sized.predict(drawings / "d0.png")
    assert sized.task == "regression" and set(value.values) == {"radius"} and value.probabilities == {}
    assert value.label == f"{value.values['radius']:.6g}"
    with pytest.raises(OptionError, match="^threshold does not apply"):
        sized.predict(drawings / "d0.png", threshold=0.5)


def test_settings_are_given_one_way(tmp_path: Path):
    with pytest.raises(OptionError, match="options or as keywords"):
        vistrain.train(tmp_path, options=vistrain.TrainOptions(), epochs=3)


@pytest.mark.parametrize("name", ["train", "resume", "evaluate", "predict", "inspect", "export", "load"])
def test_only_the_data_or_the_run_is_positional(name):
    positional = [p.name for p in inspect.signature(getattr(vistrain, name)).parameters.values()
                  if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == {"train": ["data"], "evaluate": ["run", "data"], "predict": ["run", "images"],
                          "inspect": ["run", "data"]}.get(name, ["run"])


def test_the_command_line_shows_what_the_library_says_and_only_while_it_runs(capsys):
    from vistrain.cli.show import messages_shown
    from vistrain.core.messages import say, warn

    with messages_shown():
        say("data: [red]x[/] folders")  # a name that looks like markup is shown as it is
        warn("warning: the cache [b]is[/b] damaged")
    say("after the command")
    warn("warning: after the command")
    assert capsys.readouterr().err.splitlines() == ["data: [red]x[/] folders", "warning: the cache [b]is[/b] damaged"]
