"""int8 features (`features/int8.py`): faithful to fp32 on real photos, cached apart from fp32 ones and named by their
calibration set, refused where the CPU's default kernels would ruin them; a run trained on int8 features predicts and
serves with them, and says so in config.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from skimage import data as skimage_data

from conftest import SHARED_DATA, invoke, shape_image
from vistrain.backbones import get_backbone
from vistrain.backbones.multi_depth import with_stages
from vistrain.features import int8, runtime
from vistrain.features.cache import FeatureCache
from vistrain.features.cpu import int8_dot_products
from vistrain.features.extract import extract_features
from vistrain.features.int8 import calibration_set, cosines, int8_model_path
from vistrain.features.precision import FP32, Precision
from vistrain.features.runtime import model_path
from vistrain.model import run_dir
from vistrain.model.predictor import Predictor

LITE0 = get_backbone("efficientnet_lite0")
MIN_COSINE = 0.98  # every photo's int8 features against its fp32 ones (measured: lowest 0.99, median 0.997)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> list[Path]:
    """32 training images: four crops of each of five photos (none of them the test photos) and 12 shapes."""
    folder = tmp_path_factory.mktemp("calibration")
    paths = []
    for name in ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "retina"):
        photo = Image.fromarray(getattr(skimage_data, name)())
        width, height = photo.size
        for i, (left, top) in enumerate([(0, 0), (0.4, 0), (0, 0.4), (0.4, 0.4)]):
            paths.append(folder / f"{name}-{i}.jpg")
            photo.crop((int(left * width), int(top * height), int((left + 0.6) * width),
                        int((top + 0.6) * height))).save(paths[-1], quality=90)
    for i in range(12):
        paths.append(folder / f"shape-{i}.png")
        shape_image(("circle", "square")[i % 2], seed=200 + i, size=128).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """scikit-image's cat and coffee cup, a few real cats and dogs where the shared data is present, new shapes."""
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage_data.chelsea()).save(folder / "chelsea.jpg", quality=90)
    Image.fromarray(skimage_data.coffee()).save(folder / "coffee.png")
    for i in range(4):
        shape_image(("circle", "square")[i % 2], seed=900 + i, size=150).save(folder / f"shape-{i}.png")
    real = sorted((SHARED_DATA / "cats-vs-dogs" / "val").glob("*/*.jpg"))[::50]
    return sorted(folder.iterdir()) + real


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("int8-cache")


@pytest.fixture(scope="module")
def precision(calibration: list[Path]) -> Precision:
    return Precision("int8", calibration_set(calibration, seed=0))


def test_int8_features_agree_with_fp32_on_real_photos(photos, precision: Precision, cache: Path):
    fp32 = extract_features(photos, LITE0, LITE0.preprocess, cache, show_progress=False)
    quantised = extract_features(photos, LITE0, LITE0.preprocess, cache, show_progress=False, precision=precision)
    agreement = cosines(quantised.vectors, fp32.vectors)
    assert agreement.min() >= MIN_COSINE, dict(zip((p.name for p in photos), agreement.round(4)))
    assert np.abs(quantised.vectors - fp32.vectors).max() > 1e-2  # int8 really computed them


def test_precisions_never_mix_in_the_cache(photos, precision: Precision, cache: Path):
    assert FeatureCache(cache, LITE0, LITE0.preprocess, precision=precision).path != \
           FeatureCache(cache, LITE0, LITE0.preprocess).path
    fp32 = extract_features(photos, LITE0, LITE0.preprocess, cache, show_progress=False)
    quantised = extract_features(photos, LITE0, LITE0.preprocess, cache, show_progress=False, precision=precision)
    assert fp32.computed == quantised.computed == 0  # both cached by the test above, each in its own place
    assert not np.allclose(fp32.vectors, quantised.vectors, atol=1e-3)
    other = Precision("int8", precision.calibration[1:])  # another calibration set: another model, other features
    again = extract_features(photos[:3], LITE0, LITE0.preprocess, cache, show_progress=False, precision=other)
    assert again.computed == 3
    fp32_model = model_path(cache, LITE0, LITE0.preprocess)
    assert int8_model_path(fp32_model, other).is_file() and int8_model_path(fp32_model, precision).is_file()


def test_the_feature_cache_key_covers_precision_and_feature_stages(precision: Precision, tmp_path: Path):
    staged = with_stages(LITE0, (3, 5))
    caches = [FeatureCache(tmp_path, backbone, LITE0.preprocess, precision=kind)
              for backbone in (LITE0, staged) for kind in (FP32, precision)]
    for cache in caches:
        cache.close()
    assert len({cache.path for cache in caches}) == 4


def test_the_int8_model_is_named_by_its_calibration_images_and_keeps_the_sensitive_layers(precision: Precision,
                                                                                         cache: Path):
    assert Precision("int8", precision.calibration[::-1]).key == precision.key  # the set, not its order
    fp32_model = model_path(cache, LITE0, LITE0.preprocess)
    path = int8_model_path(fp32_model, precision)
    assert path.name == f"{fp32_model.stem}-int8-{precision.key}.onnx"
    assert path.stat().st_size < fp32_model.stat().st_size / 3  # 3.8 MB against 13.4
    graph = onnx.load(path).graph
    convs = [node for node in graph.node if node.op_type == "Conv"]
    weights = {init.name: init.data_type for init in graph.initializer}
    fp32_weight = [weights.get(conv.input[1]) == onnx.TensorProto.FLOAT for conv in convs]
    assert fp32_weight[:int8.FIRST_CONVS_KEPT] == [True] * int8.FIRST_CONVS_KEPT and not any(
        fp32_weight[int8.FIRST_CONVS_KEPT:])  # the rest take dequantised int8 weights
    pooled = [i for i, node in enumerate(graph.node) if node.op_type == "GlobalAveragePool"]
    assert all(node.op_type not in ("QuantizeLinear", "DequantizeLinear") for node in graph.node[pooled[0]:])


@pytest.mark.skipif(int8_dot_products(), reason="with int8 dot products the default kernels are exact")
def test_default_kernels_are_refused_where_they_saturate(calibration: list[Path], tmp_path: Path, monkeypatch):
    """Without VNNI, ONNX Runtime's default uint8 x int8 kernels saturate; without the exact-accumulation option the
    new model fails its check against fp32 and is not used (nor cached)."""
    monkeypatch.setattr(runtime, "configure", lambda options: None)
    shaky = Precision("int8", calibration_set(calibration, seed=1))
    with pytest.raises(ValueError, match="int8 features are not faithful on this CPU .*use precision fp32"):
        extract_features(calibration[:2], LITE0, LITE0.preprocess, tmp_path, show_progress=False, precision=shaky)
    assert not list(tmp_path.glob("*-int8-*.onnx"))


def test_the_torch_engine_refuses_int8(photos, precision: Precision, tmp_path: Path):
    with pytest.raises(ValueError, match="int8 features are computed by ONNX Runtime only"):
        extract_features(photos[:1], LITE0, LITE0.preprocess, tmp_path, show_progress=False, engine="torch",
                         precision=precision)


@pytest.fixture(scope="module")
def int8_run(shapes_split: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "int8"
    cache = tmp_path_factory.mktemp("int8-cache")  # its own: every feature is computed whatever ran before
    result = invoke("train", shapes_split, "--out", out, "--epochs", "15", "--seed", "1", "--precision", "int8",
                    "--cache-dir", cache)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["timing"]["features_computed"] == 48
    return out


@pytest.mark.slow
def test_a_run_on_int8_features_records_them_and_predicts_with_them(int8_run: Path, shapes_split: Path,
                                                                    monkeypatch):
    config = json.loads((int8_run / "config.json").read_text())
    assert config["precision"] == "int8"
    trained_on = sorted(str(p.resolve()) for p in (shapes_split / "train").glob("*/*.png"))
    assert sorted(file for file, _ in config["calibration"]) == trained_on  # all 32 < 256 training images
    predicted = json.loads(invoke("predict", int8_run, shapes_split / "val", "--format", "json").stdout)
    saved = {row["file"]: row for row in run_dir.read_csv(int8_run / "predictions.csv")}
    for row in predicted:
        assert row["probability"] == pytest.approx(float(saved[row["file"]][f"prob_{row['class']}"]), abs=1e-5)
    predictor = Predictor.from_run(int8_run)
    paths = [Path(row["file"]) for row in predicted]
    fp32 = extract_features(paths, predictor.backbone, predictor.preprocess, show_progress=False, precision=FP32)
    assert np.abs(predictor.outputs(fp32.vectors) - predictor.predict(paths, show_progress=False).outputs).max() > 1e-4

    from vistrain.deploy import serve

    asked = []
    monkeypatch.setattr(serve, "feature_function", lambda *args, **kwargs: asked.append(kwargs["precision"]))
    serve.create_app(int8_run)
    assert asked == [predictor.precision]


@pytest.mark.slow
def test_an_int8_run_predicts_without_its_calibration_images_or_the_cache(shapes_split: Path, tmp_path: Path,
                                                                         monkeypatch):
    """The run keeps its int8 models (RUN/int8/): moved to a machine with an empty cache and without the training
    images, it predicts as it did; without them it could only quantise again, from images that are not there."""
    data = shutil.copytree(shapes_split, tmp_path / "data")
    out = tmp_path / "run"
    result = invoke("train", data, "--out", out, "--epochs", "5", "--seed", "1", "--precision", "int8")
    assert result.exit_code == 0, result.output
    saved_models = sorted((out / run_dir.INT8_MODELS).iterdir())
    assert len(saved_models) == 1 and "-int8-" in saved_models[0].name
    photos = shutil.copytree(data / "val", tmp_path / "photos")
    shutil.rmtree(data)  # the calibration images are gone
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "empty-cache"))
    predicted = invoke("predict", out, photos, "--format", "json")
    assert predicted.exit_code == 0, predicted.output
    saved = {Path(row["file"]).name: row for row in run_dir.read_csv(out / "predictions.csv")}
    for row in json.loads(predicted.stdout):
        assert row["probability"] == pytest.approx(float(saved[Path(row["file"]).name][f"prob_{row['class']}"]),
                                                   abs=1e-5)
    saved_models[0].write_bytes(b"not an ONNX model")
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "another-empty-cache"))
    damaged = invoke("predict", out, photos, "--format", "json")
    assert damaged.exit_code != 0 and "is damaged" in damaged.output and "Traceback" not in damaged.output
    shutil.rmtree(out / run_dir.INT8_MODELS)
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "a-third-empty-cache"))
    missing = invoke("predict", out, photos, "--format", "json")
    assert missing.exit_code != 0 and "cannot be read" in missing.output


@pytest.mark.slow
def test_audit_takes_int8_features_calibrated_like_train(int8_run: Path, shapes_split: Path, tmp_path: Path,
                                                         feature_cache: Path):
    before = set(feature_cache.glob("*int8*.onnx"))
    result = invoke("audit", shapes_split, "--precision", "int8", "--out", tmp_path / "audit")
    assert result.exit_code == 0, result.output
    assert set(feature_cache.glob("*int8*.onnx")) == before  # the same calibration images: train's int8 model


@pytest.mark.slow
@pytest.mark.parametrize("change, words", [
    (lambda c: c.update(precision="int4"), "precision is 'int4', not one of fp32, int8"),
    (lambda c: c.update(calibration=[]), "an int8 model needs its calibration images"),
    (lambda c: c.update(calibration=[["a.png", "not a digest"]]),
     "calibration is [['a.png', 'not a digest']], not a list of [file, SHA-256] pairs"),
])
def test_a_damaged_precision_in_config_json_is_one_clear_line(int8_run: Path, tmp_path: Path, change, words):
    copy = Path(shutil.copytree(int8_run, tmp_path / "copy"))
    config = json.loads((copy / "config.json").read_text())
    change(config)
    (copy / "config.json").write_text(json.dumps(config))
    result = invoke("predict", copy, tmp_path)
    assert result.exit_code != 0 and f"config.json is damaged: {words}" in result.output


def test_fine_tuning_int8_features_is_refused(shapes_split: Path, tmp_path: Path):
    result = invoke("train", shapes_split, "--out", tmp_path / "run", "--precision", "int8", "--fine-tune", "1")
    assert result.exit_code != 0 and "int8 features are for a frozen backbone" in result.output


@pytest.mark.slow
def test_auto_falls_back_to_fp32_where_int8_features_fail_their_check(calibration: list[Path], tmp_path: Path,
                                                                      monkeypatch):
    """`--precision auto` never stops a run that fp32 can do: where the int8 model fails its check (8 x 8 digits
    upscaled do; here every model does, with the bar raised past 1), train and audit compute fp32 features and say
    why. Asked for by name, int8 still refuses."""
    from vistrain.features.int8 import Int8Unfaithful

    monkeypatch.setattr(int8, "MIN_COSINE", 1.01)
    monkeypatch.setenv("VISTRAIN_PRECISION", "int8")  # what auto picks on a CPU with int8 dot products
    data = tmp_path / "data"
    for i, path in enumerate(calibration[:24]):
        (data / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / ("a" if i % 2 else "b") / path.name)
    result = invoke("train", data, "--out", tmp_path / "run", "--epochs", "2", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.stderr
    assert "int8 features are not faithful on these images" in result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["precision"] == config["training"]["precision"] == "fp32"
    assert not (tmp_path / "run" / run_dir.INT8_MODELS).exists()
    assert "quantising the backbone" in result.stderr and len(list((tmp_path / "cache").glob("*.unfaithful-*")))
    audited = invoke("audit", data, "--out", tmp_path / "audit", "--cache-dir", tmp_path / "cache")
    assert audited.exit_code == 0, audited.stderr
    assert "quantising" not in audited.stderr and "median cosine" in audited.stderr  # measured once, kept
    with pytest.raises(Int8Unfaithful):
        import vistrain

        vistrain.train(data, out=tmp_path / "asked", precision="int8", epochs=2, cache_dir=tmp_path / "cache")
