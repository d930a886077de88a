"""The static-shape export (`features/static_graph.py`): every EfficientNet-Lite loses its padding arithmetic, keeps a
dynamic batch axis and gives the features of the dynamic export it replaces (so feature caches stay valid), on
real photos and generated images; models without TensorFlow "same" padding are exported as before."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skimage_data
from torchvision import models

from conftest import shape_image
from vistrain.backbones import get_backbone
from vistrain.features import runtime
from vistrain.features.static_graph import freeze_same_padding
from vistrain.features.transforms import eval_transform

NETWORK_OPS = {"Cast", "Div", "Sub", "Conv", "Clip", "Add", "GlobalAveragePool", "Flatten"}


def pictures() -> list[Image.Image]:
    """Two real photos, a generated shape, noise and a black frame, of several sizes and aspect ratios."""
    noise = np.random.default_rng(0).integers(0, 256, (300, 410, 3), dtype=np.uint8)
    return [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee()),
            shape_image("square", 3, size=150), Image.fromarray(noise), Image.new("RGB", (60, 90))]


def dynamic_export(backbone) -> bytes:
    """The export as it was before (EXPORT_FORMAT 2): padding computed in the graph from the input's shape."""
    size = backbone.preprocess.input_size
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(runtime.pixel_feature_extractor(backbone, backbone.preprocess),
                          (torch.zeros(2, 3, size, size, dtype=torch.uint8),), buffer, dynamo=False,
                          opset_version=runtime.OPSET, input_names=[runtime.INPUT], output_names=[runtime.OUTPUT],
                          dynamic_axes={runtime.INPUT: {0: "batch"}, runtime.OUTPUT: {0: "batch"}})
    return buffer.getvalue()


def run(model: bytes | Path, pixels: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {runtime.INPUT: pixels})[0]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_exports_are_static_and_give_the_dynamic_export_s_features(name: str, tmp_path: Path):
    backbone = get_backbone(name)
    pixels = torch.stack([eval_transform(backbone.preprocess, "uint8")(p) for p in pictures()])
    session = runtime.feature_session(backbone, backbone.preprocess, tmp_path, threads=1)
    path = runtime.model_path(tmp_path, backbone, backbone.preprocess)
    graph = onnx.load(path).graph
    ops = Counter(node.op_type for node in graph.node)
    assert set(ops) == NETWORK_OPS, ops  # no Shape, Gather, Ceil, Pad...: the padding arithmetic is gone
    assert session.get_inputs()[0].shape[0] == "batch"

    static = session.run(None, {runtime.INPUT: pixels.numpy()})[0]
    np.testing.assert_array_equal(session.run(None, {runtime.INPUT: pixels[1:2].numpy()})[0], static[1:2])
    # What feature caches hold: the dynamic export's features. Bit for bit here; 1e-6 leaves room for other CPUs.
    assert np.abs(static - run(dynamic_export(backbone), pixels.numpy())).max() <= 1e-6
    with torch.no_grad():
        eager = runtime.pixel_feature_extractor(backbone, backbone.preprocess)(pixels).numpy()
    # ONNX Runtime against torch eager: within 1e-5 of the largest feature (measured: 4e-6 of it, Lite0)
    assert np.abs(static - eager).max() <= 1e-5 * np.abs(eager).max()
    assert np.abs(eager).max() > 1  # real features


def test_models_without_same_padding_are_exported_as_before(tmp_path: Path):
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "r18.safetensors")
    backbone = get_backbone(f"timm:resnet18@{tmp_path / 'r18.safetensors'}")
    example = torch.zeros(2, 3, 224, 224, dtype=torch.uint8)
    assert freeze_same_padding(runtime.pixel_feature_extractor(backbone, backbone.preprocess), example) == 0
    assert freeze_same_padding(models.resnet18().eval(), example.float()) == 0
    exported = runtime.onnx_bytes(runtime.pixel_feature_extractor(backbone, backbone.preprocess), example,
                                  runtime.OUTPUT)
    before = dynamic_export(backbone)
    assert [n.op_type for n in onnx.load_from_string(exported).graph.node] == \
           [n.op_type for n in onnx.load_from_string(before).graph.node]
    pixels = np.random.default_rng(1).integers(0, 256, (2, 3, 224, 224), dtype=np.uint8)
    np.testing.assert_array_equal(run(exported, pixels), run(before, pixels))
