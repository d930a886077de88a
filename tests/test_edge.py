"""`vistrain export --format tflite|coreml|openvino [--int8]`: each model run by its own runtime and compared with
`predict` (Core ML, which runs on Apple devices only: its spec and size), a fine-tuned run and one at another
input size exported the same way, real photos through examples/edge_predict.py without vistrain."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA, invoke
from test_deploy import expected, photos  # noqa: F401 (fixtures: skimage's photos, shapes; predict's outputs)
from test_finetune import tuned_run  # noqa: F401 (fixture: a run trained with --fine-tune 1)
from vistrain.features.inputs import prepare_image
from vistrain.model.predictor import Predictor

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "edge_predict.py"
NO_VISTRAIN = ("import runpy, sys; sys.modules['vistrain'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO's default on CPUs with AMX or AVX-512 BF16 is bf16


def needs(extra: str, *modules: str):
    return pytest.mark.skipif(any(find_spec(m) is None for m in modules),
                              reason=f"needs pip install 'vistrain[{extra}]'")


pytestmark = pytest.mark.slow  # every test here exports a trained run
TFLITE, COREML, OPENVINO = (needs("tflite", "litert_torch", "ai_edge_litert"), needs("coreml", "coremltools"),
                            needs("openvino", "openvino"))


def export_command(run: Path, out: Path, output_format: str, *options: str) -> subprocess.CompletedProcess:
    """`vistrain export` in a process of its own, as a user runs it (litert-torch starts JAX's threads, which a
    later fork in this process would inherit)."""
    result = subprocess.run([sys.executable, "-m", "vistrain", "export", run, "--format", output_format, "--out", out,
                             *options], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    return result


def exported(run: Path, folder: Path, output_format: str, *options: str) -> Path:
    out = folder / f"{output_format}{'-int8' if options else ''}"
    export_command(run, out, output_format, *options)
    return out


def run_tflite(path: Path, images: np.ndarray) -> np.ndarray:
    """The .tflite file run by the LiteRT interpreter, after checking its input and output."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (given,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == np.uint8 and list(given["shape"]) == [1, *images.shape[1:]] and output["dtype"] == np.float32
    run = interpreter.get_signature_runner("serving_default")
    return np.concatenate([run(images=image[None])["outputs"] for image in images])


def run_openvino(path: Path, images: np.ndarray, config: dict | None = None) -> np.ndarray:
    import openvino

    model = openvino.Core().read_model(path / "model.xml")
    assert model.input().get_any_name() == "images" and model.output().get_any_name() == "outputs"
    return openvino.Core().compile_model(model, "CPU", config or {})(images)[0]


def tflite_metadata(path: Path) -> dict[str, str]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes())
    entries = (model.Metadata(i) for i in range(model.MetadataLength()))
    return {e.Name().decode(): model.Buffers(e.Buffer()).DataAsNumpy().tobytes().decode("utf-8", "replace")
            for e in entries}


def openvino_metadata(path: Path) -> dict[str, str]:
    import openvino

    info = openvino.Core().read_model(path / "model.xml").get_rt_info()
    return {key: value.astype(str) for key, value in info["vistrain"].items()}


def pixels(run: Path, paths: list[Path]) -> np.ndarray:
    preprocess = Predictor.from_run(run).preprocess
    return np.stack([prepare_image(path, preprocess) for path in paths])


def describes(meta: dict[str, str], run: Path, precision: str) -> None:
    config = json.loads((run / "config.json").read_text())
    assert json.loads(meta["classes"]) == config["classes"] and meta["task"] == config["task"]
    assert json.loads(meta["preprocess"]) == config["preprocess"] and meta["precision"] == precision


def without_vistrain(model: Path, images: list[Path]) -> list[str]:
    """The class examples/edge_predict.py gives each image, run where importing vistrain fails."""
    output = subprocess.run([sys.executable, "-I", "-c", NO_VISTRAIN, EXAMPLE, model, *images], check=True,
                            capture_output=True, text=True).stdout
    lines = [line.rsplit(" ", 2) for line in output.strip().splitlines()]
    assert [file for file, _, _ in lines] == [str(path) for path in images]
    return [name for _, name, _ in lines]


@TFLITE
def test_tflite_matches_predict_and_carries_the_run(run: Path, photos, expected, tmp_path: Path):
    model = exported(run, tmp_path, "tflite")
    np.testing.assert_allclose(run_tflite(model, pixels(run, photos)), expected, atol=1e-4)
    describes(tflite_metadata(model), run, "fp32")
    names = without_vistrain(model, photos)
    assert names == [["circle", "square"][row.argmax()] for row in expected]


@OPENVINO
def test_openvino_matches_predict_on_any_batch_and_carries_the_run(run: Path, photos, expected, tmp_path: Path):
    model = exported(run, tmp_path, "openvino")
    assert sorted(p.name for p in model.iterdir()) == ["model.bin", "model.xml"]
    images = pixels(run, photos)
    np.testing.assert_allclose(run_openvino(model, images, F32), expected, atol=1e-4)
    np.testing.assert_allclose(run_openvino(model, images[:1], F32), expected[:1], atol=1e-4)
    np.testing.assert_allclose(run_openvino(model, images), expected, atol=0.05)  # OpenVINO's own choice: bf16 here
    describes(openvino_metadata(model), run, "fp32")
    assert without_vistrain(model, photos) == [["circle", "square"][row.argmax()] for row in expected]


@pytest.mark.parametrize("output_format, read", [pytest.param("tflite", tflite_metadata, marks=TFLITE),
                                                  pytest.param("openvino", openvino_metadata, marks=OPENVINO)])
def test_int8_is_small_reports_its_check_and_agrees_with_predict(output_format, read, run: Path, shapes_split: Path,
                                                                 tmp_path: Path):
    """int8 in its own runtime, without vistrain: under 5 MB for Lite0 (plus a byte per weight of the head), its
    check against the fp32 model printed and in its metadata, and the top class of `predict` on at least 98% of the
    validation images (and at least the share the check states)."""
    out = tmp_path / "int8"
    result = export_command(run, out, output_format, "--int8")
    meta = read(out)
    check = json.loads(meta["int8_check"])
    describes(meta, run, "int8")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.is_dir() else out.stat().st_size
    head_weights = sum(p.numel() for p in Predictor.from_run(run).head.parameters())
    assert size <= 5_000_000 + head_weights and check["fp32_bytes"] > 3 * size
    assert check["images"] == 16 and check["calibration_images"] == 32 and check["top1_agreement"] >= 0.98
    assert f"{size / 1e6:.2f} MB" in result.stderr and f"{check['top1_agreement']:.1%}" in result.stderr
    val = sorted((shapes_split / "val").glob("*/*.png"))
    predicted = Predictor.from_run(run).predict(val, tmp_path / "cache", show_progress=False).outputs
    same = np.mean([name == ["circle", "square"][row.argmax()]
                    for name, row in zip(without_vistrain(out, val), predicted, strict=True)])
    assert same >= max(0.98, check["top1_agreement"])


def coreml_spec(path: Path):
    import coremltools

    spec = coremltools.utils.load_spec(str(path))
    main = spec.mlProgram.functions["main"]
    return spec, list(main.block_specializations[main.opset].operations)


@COREML
@pytest.mark.parametrize("int8", [False, True])
def test_coreml_package_is_an_image_classifier_carrying_the_run(int8: bool, run: Path, tmp_path: Path):
    """Core ML runs on Apple devices only: the package's spec (an RGB image in, the class and its probabilities out,
    the class labels, the run's metadata) and its size (fp16; int8 weights), read on Linux."""
    model = exported(run, tmp_path, "coreml", *(["--int8"] if int8 else []))
    spec, operations = coreml_spec(model)
    image = spec.description.input[0]
    assert image.name == "image" and image.type.imageType.width == image.type.imageType.height == 224
    assert image.type.imageType.colorSpace == spec.description.input[0].type.imageType.RGB
    assert [o.name for o in spec.description.output] == ["classLabel", "classLabel_probs"]
    (classify,) = [op for op in operations if op.type == "classify"]
    labels = [v.immediateValue.tensor.strings.values[0]
              for v in classify.inputs["classes"].arguments[0].value.immediateValue.list.values]
    assert labels == ["circle", "square"]
    describes(dict(spec.description.metadata.userDefined), run, "int8 weights, fp16 arithmetic" if int8 else "fp16")
    size = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    quantized = sum(op.type == "constexpr_affine_dequantize" for op in operations)
    if int8:
        assert size <= 4_500_000 and quantized >= 40  # every convolution's weights but the smallest
    else:
        assert 6_000_000 <= size <= 8_000_000 and quantized == 0  # Lite0's 3.4 M weights in fp16


@pytest.fixture(scope="module")
def small_run(run: Path, tmp_path_factory) -> Path:
    """The shapes run told to see its images at 160 x 160 (the head takes the same number of features)."""
    copy = tmp_path_factory.mktemp("small") / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["preprocess"]["input_size"] = 160
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.skipif(not (find_spec("litert_torch") or find_spec("openvino") or find_spec("coremltools")),
                    reason="needs pip install 'vistrain[tflite,coreml,openvino]'")
@pytest.mark.parametrize("which", ["tuned_run", "small_run"])
def test_a_fine_tuned_run_and_one_at_another_size_export_their_own_model(which: str, request, shapes_split: Path,
                                                                         tmp_path: Path):
    """Each format carries the run's own backbone and input size: its outputs are `predict`'s."""
    chosen = request.getfixturevalue(which)
    val = sorted((shapes_split / "val").glob("*/*.png"))[::4]
    predicted = Predictor.from_run(chosen).predict(val, tmp_path / "cache", show_progress=False).outputs
    images = pixels(chosen, val)
    assert images.shape[1] == (160 if which == "small_run" else 224)
    if find_spec("litert_torch") and find_spec("ai_edge_litert"):
        np.testing.assert_allclose(run_tflite(exported(chosen, tmp_path, "tflite"), images), predicted, atol=1e-4)
    if find_spec("openvino"):
        np.testing.assert_allclose(run_openvino(exported(chosen, tmp_path, "openvino"), images, F32), predicted,
                                   atol=1e-4)
    if find_spec("coremltools"):
        spec, _ = coreml_spec(exported(chosen, tmp_path, "coreml"))
        assert spec.description.input[0].type.imageType.width == images.shape[1]


@pytest.mark.slow
def test_a_missing_extra_is_one_line_with_the_pip_command(run: Path, tmp_path: Path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    result = invoke("export", run, "--format", "openvino", "--out", tmp_path / "m")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == ["Error: --format openvino needs openvino: pip install "
                                                  "'vistrain[openvino]'"]
    assert not (tmp_path / "m").exists()
    assert invoke("export", run, "--format", "torchscript", "--int8").exit_code == 1


@pytest.fixture(scope="module")
def pets_run(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A run trained on 60 cats and 60 dogs of the shared Kaggle photos, and its 200 validation photos."""
    source = SHARED_DATA / "cats-vs-dogs"
    if not source.is_dir():
        pytest.skip(f"{source} is not here")
    data = tmp_path_factory.mktemp("pets")
    for split, count in (("train", 60), ("val", 100)):
        for kind in ("cat", "dog"):
            (data / split / kind).mkdir(parents=True)
            for path in sorted((source / split / kind).glob("*.jpg"))[:count]:
                shutil.copy(path, data / split / kind / path.name)
    out = tmp_path_factory.mktemp("runs") / "pets"
    result = invoke("train", data, "--out", out, "--epochs", "10", "--seed", "1")
    assert result.exit_code == 0, result.output
    return out, sorted((data / "val").glob("*/*.jpg"))


@pytest.mark.slow
@pytest.mark.parametrize("output_format, int8", [pytest.param(name, int8, marks=marks) for name, marks in
                                                 (("tflite", TFLITE), ("openvino", OPENVINO)) for int8 in (False, True)])
def test_real_photos_get_the_class_predict_gives(output_format: str, int8: bool, pets_run, photos, tmp_path: Path):
    """Real cats and dogs (and skimage's cat and coffee cup), decoded by Pillow, each model run by its runtime
    without vistrain: the top class of `predict` on at least 99% of them in fp32, 98% in int8."""
    run, val = pets_run
    images = val + photos[:2]
    model = exported(run, tmp_path, output_format, *(["--int8"] if int8 else []))
    predicted = Predictor.from_run(run).predict(images, tmp_path / "cache", show_progress=False).outputs
    same = np.mean([name == ["cat", "dog"][row.argmax()] for name, row in zip(without_vistrain(model, images),
                                                                              predicted, strict=True)])
    assert same >= (0.98 if int8 else 0.99)


@pytest.mark.slow
def test_an_out_that_is_a_folder_for_a_file_or_a_file_for_a_folder_is_refused(run: Path, tmp_path: Path):
    (tmp_path / "file").write_text("mine")
    result = invoke("export", run, "--format", "onnx", "--out", tmp_path)
    assert result.exit_code == 1 and "is a folder: --format onnx writes a file" in result.output
    if find_spec("openvino"):  # without it, the missing extra is said first
        result = invoke("export", run, "--format", "openvino", "--out", tmp_path / "file")
        assert result.exit_code == 1 and "is a file: --format openvino writes a folder" in result.output
        assert (tmp_path / "file").read_text() == "mine"
