"""`vistrain export`: ONNX and TorchScript files that agree with `vistrain predict`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from conftest import SHARED_DATA, invoke, shape_image
from vistrain.export import prepare_image
from vistrain.predict import Predictor

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "onnx_predict.py"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Real-ish photos of several sizes and formats (skimage's cat and coffee cup, a few real cats and dogs where
    the shared data is present), generated shapes, and a portrait image."""
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.chelsea()).save(folder / "chelsea.jpg", quality=90)
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.png")
    shape_image("circle", 7, size=150).save(folder / "circle.png")
    shape_image("square", 8).resize((90, 200)).save(folder / "tall-square.webp")
    real = sorted((SHARED_DATA / "cats-vs-dogs" / "val").glob("*/*.jpg"))[::125]
    return [folder / name for name in ("chelsea.jpg", "coffee.png", "circle.png", "tall-square.webp")] + real


@pytest.fixture(scope="module")
def expected(run: Path, photos: list[Path], tmp_path_factory) -> np.ndarray:
    """`Predictor.predict`'s outputs for the photos (its own feature cache, so nothing is shared with export)."""
    result = Predictor.from_run(run).predict(photos, tmp_path_factory.mktemp("cache"), show_progress=False)
    assert result.paths == photos
    return result.outputs


@pytest.fixture(scope="module")
def onnx_file(run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    result = invoke("export", run, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_onnx_export_matches_predictor_on_every_batch_size(onnx_file: Path, run: Path, photos, expected):
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    preprocess = Predictor.from_run(run).preprocess
    images = np.stack([prepare_image(path, preprocess) for path in photos])
    assert images.dtype == np.uint8 and images.shape == (len(photos), 224, 224, 3)
    np.testing.assert_allclose(session.run(None, {"images": images})[0], expected, atol=1e-4)
    np.testing.assert_allclose(session.run(None, {"images": images[:1]})[0], expected[:1], atol=1e-4)
    assert [i.shape[0] for i in session.get_inputs()] == ["batch"]


def test_onnx_metadata_describes_the_run(onnx_file: Path, run: Path):
    import onnx

    meta = {p.key: p.value for p in onnx.load(onnx_file).metadata_props}
    config = json.loads((run / "config.json").read_text())
    assert json.loads(meta["classes"]) == ["circle", "square"]
    assert meta["task"] == "binary"
    assert json.loads(meta["preprocess"]) == config["preprocess"]
    assert json.loads(meta["backbone"])["name"] == "efficientnet_lite0"
    assert meta["vistrain_version"]
    assert "thresholds" not in meta  # multi-label models only


def test_torchscript_export_matches_predictor(run: Path, photos, expected, tmp_path: Path):
    out = tmp_path / "model.pt"
    assert invoke("export", run, "--format", "torchscript", "--out", out).exit_code == 0
    extra = {"classes": "", "task": "", "preprocess": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        model = torch.jit.load(out, _extra_files=extra)
    assert json.loads(extra["classes"]) == ["circle", "square"] and extra["task"] == b"binary"
    preprocess = Predictor.from_run(run).preprocess
    images = torch.from_numpy(np.stack([prepare_image(path, preprocess) for path in photos]))
    with torch.no_grad():
        np.testing.assert_allclose(model(images).numpy(), expected, atol=1e-4)
        np.testing.assert_allclose(model(images[2:3]).numpy(), expected[2:3], atol=1e-4)


def test_export_defaults_to_the_run_directory_and_refuses_a_missing_run(run: Path, tmp_path: Path):
    result = invoke("export", tmp_path, "--format", "onnx")
    assert result.exit_code != 0 and "not a vistrain run directory" in result.output
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert invoke("export", copy).exit_code == 0
    assert (copy / "model.onnx").stat().st_size > 1_000_000


def test_readme_example_runs_without_vistrain(onnx_file: Path, photos, expected):
    """examples/onnx_predict.py with onnxruntime, Pillow and numpy only: importing vistrain there would fail."""
    block_vistrain = ("import runpy, sys; sys.modules['vistrain'] = None; sys.argv = sys.argv[1:]; "
                      "runpy.run_path(sys.argv[0], run_name='__main__')")
    output = subprocess.run([sys.executable, "-I", "-c", block_vistrain, EXAMPLE, onnx_file, *photos],
                            check=True, capture_output=True, text=True).stdout
    lines = output.strip().splitlines()
    assert len(lines) == len(photos)
    for line, path, row in zip(lines, photos, expected):
        file, name, probability = line.rsplit(" ", 2)
        assert file == str(path)
        assert name == ["circle", "square"][row.argmax()]
        # Pillow's bicubic resize differs from torchvision's by at most a grey level or two on a few pixels
        assert float(probability) == pytest.approx(row.max(), abs=2e-3)

