"""The feature cache: computed once per image content, reused across names and runs, keyed by preprocessing;
the ONNX Runtime engine, its cached export and the torch fallback."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shape_image
from vistrain.features import extract as features
from vistrain.features import runtime
from vistrain.backbones import get_backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.features.cache import FeatureCache
from vistrain.features import inputs
from vistrain.features.extract import extract_features
from vistrain.data.images import load_rgb
from vistrain.features.transforms import View, eval_transform
from vistrain.model import run_dir

LITE0 = get_backbone("efficientnet_lite0")


def images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i}.png" for i in range(n)]
    for i, path in enumerate(paths):
        shape_image("circle", seed=i).save(path)
    return paths


def test_second_extraction_reads_the_cache(tmp_path: Path):
    paths = images(tmp_path / "img", 3)
    first = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    second = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    assert (first.computed, second.computed) == (3, 0)
    assert first.vectors.shape == (3, LITE0.feature_dim)
    np.testing.assert_array_equal(first.vectors, second.vectors)


def test_cache_follows_content_not_names(tmp_path: Path):
    paths = images(tmp_path / "img", 2)
    extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    renamed = tmp_path / "renamed.png"
    shutil.copy(paths[0], renamed)
    shape_image("square", seed=99).save(paths[1])  # same name, new content
    again = extract_features([renamed, paths[1]], LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    assert again.computed == 1


def test_other_preprocessing_has_its_own_cache(tmp_path: Path):
    paths = images(tmp_path / "img", 1)
    other = dataclasses.replace(LITE0.preprocess, crop_pct=1.0)
    a = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    b = extract_features(paths, LITE0, other, tmp_path / "cache", show_progress=False)
    assert b.computed == 1
    assert not np.allclose(a.vectors, b.vectors)
    assert FeatureCache(tmp_path / "cache", LITE0, other).path != FeatureCache(tmp_path / "cache", LITE0, LITE0.preprocess).path


def test_unreadable_files_are_skipped_with_reasons(tmp_path: Path):
    good = images(tmp_path / "img", 2)
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [good[0], tmp_path / "text.jpg", tmp_path / "missing.jpg", tmp_path / "empty.png", good[1]]
    result = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    assert result.kept == [0, 4]
    assert result.vectors.shape == (2, LITE0.feature_dim)
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert set(reasons) == {"text.jpg", "missing.jpg", "empty.png"}
    assert "not an image" in reasons["text.jpg"] and "empty" in reasons["empty.png"]
    assert "No such file" in reasons["missing.jpg"]


def test_onnx_and_torch_engines_give_the_same_features(tmp_path: Path):
    paths = images(tmp_path / "img", 5)  # batches of 2, 2 and 1: the ONNX batch axis is dynamic
    onnx = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "onnx", 2, show_progress=False, engine="onnx")
    eager = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "torch", 2, show_progress=False, engine="torch")
    assert onnx.vectors.shape == eager.vectors.shape == (5, LITE0.feature_dim)
    assert np.abs(onnx.vectors - eager.vectors).max() < 1e-3
    assert np.abs(onnx.vectors).max() > 0.1  # real features, not zeros


def test_features_are_the_backbone_s_on_the_normalised_eval_transform(tmp_path: Path):
    """Workers ship uint8 pixels and the extractor normalises them: the same input as `eval_transform` gives, which
    fine-tuning trains on and earlier feature caches hold."""
    paths = images(tmp_path / "img", 3)
    with torch.no_grad():
        expected = LITE0.build_feature_extractor()(
            torch.stack([eval_transform(LITE0.preprocess)(load_rgb(p)) for p in paths])).numpy()
    for engine in features.ENGINES:
        got = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / engine, show_progress=False, engine=engine)
        assert np.abs(got.vectors - expected).max() < 1e-3, engine


def test_onnx_export_is_cached(tmp_path: Path, monkeypatch):
    exports = []
    export = runtime.export_feature_extractor
    monkeypatch.setattr(runtime, "export_feature_extractor", lambda *args: exports.append(args) or export(*args))
    runtime.feature_session(LITE0, LITE0.preprocess, tmp_path, threads=1)
    path = runtime.model_path(tmp_path, LITE0, LITE0.preprocess)
    written = path.stat().st_mtime_ns
    session = runtime.feature_session(LITE0, LITE0.preprocess, tmp_path, threads=1)
    assert len(exports) == 1 and path.stat().st_mtime_ns == written
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    batch = np.zeros((3, 3, 224, 224), np.uint8)
    assert session.run(None, {runtime.INPUT: batch})[0].shape == (3, LITE0.feature_dim)


def test_other_preprocessing_is_exported_again(tmp_path: Path):
    other = dataclasses.replace(LITE0.preprocess, input_size=192)
    assert runtime.model_path(tmp_path, LITE0, other) != runtime.model_path(tmp_path, LITE0, LITE0.preprocess)


def test_torch_engine_never_touches_onnx(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(features, "feature_session", lambda *args, **kwargs: pytest.fail("ONNX Runtime was used"))
    monkeypatch.setenv("VISTRAIN_ENGINE", "torch")
    result = extract_features(images(tmp_path / "img", 2), LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    assert result.computed == 2
    assert not list((tmp_path / "cache").glob("*.onnx"))


def test_falls_back_to_torch_when_onnx_fails(tmp_path: Path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ImportError("No module named 'onnxruntime'")

    paths = images(tmp_path / "img", 2)
    expected = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "onnx", show_progress=False, engine="onnx")
    monkeypatch.setattr(features, "feature_session", broken)
    result = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False, engine="onnx")
    assert result.computed == 2
    assert np.abs(result.vectors - expected.vectors).max() < 1e-3
    [warning] = [r.getMessage() for r in caplog.records if r.name == "vistrain" and r.levelname == "WARNING"]
    assert "warning:" in warning and "No module named 'onnxruntime'" in warning and "torch" in warning


def test_unknown_engine_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="onnx, torch"):
        extract_features([], LITE0, LITE0.preprocess, tmp_path, engine="tensorflow")


def test_large_feature_matrices_are_memory_mapped(tmp_path: Path, monkeypatch):
    for i in range(3):
        shape_image("circle", i).save(tmp_path / f"{i}.png")
    paths = sorted(tmp_path.glob("*.png"))
    backbone = get_backbone("efficientnet_lite0")
    in_memory = extract_features(paths, backbone, backbone.preprocess, tmp_path / "cache", show_progress=False)
    assert not isinstance(in_memory.vectors, np.memmap)
    monkeypatch.setattr(features, "MEMORY_MAPPED_BYTES", 100)
    mapped = extract_features(paths, backbone, backbone.preprocess, tmp_path / "cache", show_progress=False)
    assert isinstance(mapped.vectors, np.memmap) and mapped.computed == 0
    assert np.array_equal(mapped.vectors, in_memory.vectors)
    assert not list((tmp_path / "cache").glob("features-*.f32"))  # an anonymous file: nothing left behind


def test_in_threads_keeps_order_and_stays_close_to_the_caller():
    started: list[int] = []

    def work(batch: int) -> int:
        started.append(batch)
        return batch * 10

    results = features.in_threads(range(10), work, threads=2)
    assert next(results) == 0
    time.sleep(0.2)
    assert len(started) <= 3  # at most threads + 1 batches ahead: memory is set by the batch size
    assert list(results) == [b * 10 for b in range(1, 10)]


def test_in_threads_passes_on_an_error():
    def work(batch: int) -> int:
        if batch == 3:
            raise RuntimeError("disk on fire")
        return batch

    with pytest.raises(RuntimeError, match="disk on fire"):
        list(features.in_threads(range(6), work, threads=2))


def test_a_concatenation_and_its_parts_alone_share_their_caches_and_decode_once(tmp_path: Path, monkeypatch):
    """Each part of a concatenation takes its own preprocessing, as it does alone, so Lite0 computed alone, then
    Lite0+Lite2, computes Lite2 only, and Lite2 alone then computes nothing; each image is decoded once for both."""
    paths = images(tmp_path / "img", 3)
    (tmp_path / "text.jpg").write_text("not an image")
    paths.insert(1, tmp_path / "text.jpg")
    lite2, both = get_backbone("efficientnet_lite2"), get_backbone("efficientnet_lite0+efficientnet_lite2")
    alone = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "cache", show_progress=False)
    fresh = extract_features(paths, lite2, lite2.preprocess, tmp_path / "fresh", show_progress=False)
    ran, decoded = [], []  # (backbone, images) of every forward pass; every file decoded
    function, load_pixels = features.feature_function, inputs.load_pixels

    def counted(backbone, *args):
        forward = function(backbone, *args)
        return lambda batch: ran.append((backbone.name, len(batch))) or forward(batch)

    monkeypatch.setattr(features, "feature_function", counted)
    monkeypatch.setattr(inputs, "load_pixels", lambda path, **kwargs: decoded.append(path) or load_pixels(path, **kwargs))
    joined = extract_features(paths, both, both.preprocess, tmp_path / "cache", show_progress=False)
    assert ran == [("efficientnet_lite2", 3)] and joined.computed == 3 and sorted(decoded) == sorted(paths)
    assert joined.kept == alone.kept == [0, 2, 3] and [s.path.name for s in joined.skipped] == ["text.jpg"]
    np.testing.assert_array_equal(joined.vectors[:, :LITE0.feature_dim], alone.vectors)
    part = extract_features(paths, lite2, lite2.preprocess, tmp_path / "cache", show_progress=False)
    assert part.computed == 0 and ran == [("efficientnet_lite2", 3)]  # the other way round: nothing to compute
    np.testing.assert_array_equal(joined.vectors[:, LITE0.feature_dim:], part.vectors)
    np.testing.assert_array_equal(fresh.vectors, part.vectors)  # what Lite2 computes alone, from its own input
    again = extract_features(paths, both, both.preprocess, tmp_path / "cache", show_progress=False)
    assert again.computed == 0 and len(ran) == 1  # the unreadable file is tried, not run
    np.testing.assert_array_equal(again.vectors, joined.vectors)
    with pytest.raises(ValueError, match="part by part"):
        function(both, both.preprocess, tmp_path / "cache")

def test_each_part_gets_the_pixels_it_gets_alone_even_where_large_images_are_reduced(tmp_path: Path):
    """A 2,200 px photo is reduced while decoding for Lite0 (at 2,048 px and over) but not for Lite2 (2,336): each
    part's pixels are those it is given alone, however many decodes that takes."""
    lite2 = get_backbone("efficientnet_lite2")
    path = tmp_path / "large.png"
    shape_image("circle", seed=3, size=2200).save(path)
    pixels = inputs.PartPixels([LITE0.preprocess, lite2.preprocess], View())(path, "0" * 64, (0, 1))
    for i, backbone in enumerate((LITE0, lite2)):
        alone = View().transform(backbone.preprocess)(load_rgb(path, reduce_to=backbone.preprocess.resize_size), "")
        assert torch.equal(pixels[i], alone), backbone.name


@pytest.mark.slow
def test_a_concatenation_run_records_each_part_s_preprocessing_and_predicts_with_it(shapes_split: Path,
                                                                                    tmp_path: Path):
    """config.json records each part's preprocessing; `predict` feeds each part its own, from the cache `train`
    filled; runs from before parts took their own (no backbone.parts) keep the one preprocessing they were trained
    on; the export, which takes one input, refuses."""
    from conftest import invoke
    from vistrain.model.predictor import Predictor
    from vistrain.model.run_config import RunConfig
    from vistrain.model.run_dir import part_preprocessing

    out = tmp_path / "both"
    result = invoke("train", shapes_split, "--out", out, "--backbone", "efficientnet_lite0+efficientnet_lite1",
                    "--head", "logistic")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    lite1 = get_backbone("efficientnet_lite1")
    assert [(part["name"], Preprocess.from_dict(part["preprocess"])) for part in config["backbone"]["parts"]] == [
        ("efficientnet_lite0", LITE0.preprocess), ("efficientnet_lite1", lite1.preprocess)]
    predictor = Predictor.from_run(out)
    assert [part.preprocess for part in predictor.backbone.parts] == [LITE0.preprocess, lite1.preprocess]
    predicted = json.loads(invoke("predict", out, shapes_split / "val", "--format", "json").stdout)
    saved = {row["file"]: row for row in run_dir.read_csv(out / "predictions.csv")}
    for row in predicted:
        assert row["probability"] == pytest.approx(float(saved[row["file"]][f"prob_{row['class']}"]), abs=1e-5)
    del config["backbone"]["parts"]  # as issue 17's runs were written
    older = part_preprocessing(RunConfig.from_json(config), get_backbone(config["backbone"]["name"]))
    assert [part.preprocess for part in older.parts] == [lite1.preprocess] * 2  # the concatenation's one (largest)
    exported = invoke("export", out, "--format", "onnx")
    assert exported.exit_code != 0 and "an exported model takes one input" in exported.output
