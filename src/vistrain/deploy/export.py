"""Export a trained run as one self-contained model file: ONNX or TorchScript.

The exported model takes uint8 RGB images, N x H x W x 3 with H = W = the run's input size, already resized
(shorter side) and centre-cropped exactly as `eval_transform(preprocess, output="uint8")` does; see
`prepare_image`. Inside the model: to float, /255, normalise with the run's mean and std, NCHW, backbone, head and
the task's activation, giving what `Predictor.outputs` gives (class or label probabilities, or values).
The run's classes (with their names, if it has them), task, preprocessing and tuned thresholds travel with the file as
metadata (`metadata`).
The backbone is the fp32 one whatever the features' precision in training; `--int8` quantises the whole ONNX model
(`quantized.py`).
"""

from __future__ import annotations

import io
import json
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from vistrain.backbones.preprocess import Preprocess
from vistrain.core.files import make_folder, write_atomic
from vistrain.data.images import load_rgb
from vistrain.deploy.quantized import quantized_export
from vistrain.features.runtime import INPUT, onnx_bytes
from vistrain.features.transforms import PixelNormalize, eval_transform
from vistrain.model import tasks
from vistrain.model.predictor import Predictor

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
OUTPUT = "outputs"


def prepare_image(image: str | Path | Image.Image, preprocess: Preprocess) -> np.ndarray:
    """An image file (read with `load_rgb`: any format, EXIF orientation) or RGB PIL image, resized and
    centre-cropped as `eval_transform` does: the uint8 H x W x 3 array an exported model takes."""
    if isinstance(image, (str, Path)):
        image = load_rgb(image, reduce_to=preprocess.resize_size)  # as `vistrain predict` reads files
    return eval_transform(preprocess, output="uint8")(image).permute(1, 2, 0).numpy()


class DeployedModel(nn.Module):
    """uint8 NHWC images -> the task's outputs: scaling, normalisation, backbone, head and activation."""

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocess: Preprocess, task: str):
        super().__init__()
        self.normalize = PixelNormalize(preprocess)
        self.backbone = backbone.eval()
        self.head = head.eval()
        self.task = task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images.permute(0, 3, 1, 2))
        return tasks.outputs(self.task, self.head(self.backbone(x)))


def deployed_model(predictor: Predictor) -> DeployedModel:
    """The whole model of a loaded run, for export."""
    return DeployedModel(predictor.backbone.build_feature_extractor(), predictor.head, predictor.preprocess,
                         predictor.task)


def metadata(predictor: Predictor) -> dict[str, str]:
    """What a user of the exported file needs, as strings (JSON for lists and objects)."""
    config = predictor.config
    values = {
        "classes": json.dumps(predictor.classes),
        "task": predictor.task,
        "preprocess": json.dumps(predictor.preprocess.to_dict()),
        "input": f"{INPUT}: uint8 RGB, N x {predictor.preprocess.input_size} x {predictor.preprocess.input_size} x 3, "
                 "resized (shorter side) and centre-cropped",
        "backbone": json.dumps(config["backbone"]),
        "precision": "fp32",
        "vistrain_version": version("vistrain"),
    }
    if predictor.task == "multilabel":
        values["thresholds"] = json.dumps(predictor.thresholds)
    if "class_names" in config:
        values["class_names"] = json.dumps(config["class_names"])
    return values


def export(run: str | Path, output_format: str, out: str | Path | None = None, int8: bool = False) -> Path:
    """Write RUN's model as `output_format` ('onnx' or 'torchscript'), with `int8` (ONNX only) quantised to int8
    (`quantized.py`); returns the file written [default: RUN/model.onnx, RUN/model-int8.onnx or RUN/model.pt]."""
    if output_format not in FORMATS:
        raise ValueError(f"unknown format {output_format!r}; choose one of {', '.join(FORMATS)}")
    if int8 and output_format != "onnx":
        raise ValueError("an int8 export is an ONNX model: --int8 needs --format onnx")
    predictor = Predictor.from_run(run)
    if any(part.preprocess != predictor.preprocess for part in predictor.backbone.parts):
        raise ValueError(f"{predictor.backbone.name}: the run's backbones each take their own preprocessing (their "
                         "features are cached as each computes them alone), and an exported model takes one input; "
                         "a concatenation cannot be exported")
    path = Path(out) if out else Path(run) / f"model{'-int8' if int8 else ''}{FORMATS[output_format]}"
    make_folder(path.parent, "the export's folder")
    model = deployed_model(predictor)
    size = predictor.preprocess.input_size
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    with torch.no_grad():
        data = (_onnx_bytes if output_format == "onnx" else _torchscript_bytes)(model, example, metadata(predictor))
    if int8:
        data = quantized_export(data, predictor, Path(run))
    write_atomic(path, data)
    return path


def _onnx_bytes(model: nn.Module, example: torch.Tensor, values: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_from_string(onnx_bytes(model, example, OUTPUT))
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "vistrain"
    return proto.SerializeToString()


def _torchscript_bytes(model: nn.Module, example: torch.Tensor, values: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # TorchScript is deprecated upstream, yet still what many C++/mobile runtimes load
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(model, (example,)), buffer, _extra_files=values)
    return buffer.getvalue()
