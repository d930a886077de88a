"""`vistrain export RUN --format coreml [--int8]`: the whole model as a Core ML package (model.mlpackage, an ML
Program) for iOS 16+ and macOS 13+.

Converted from PyTorch (torch.export) by coremltools. Its input `image` is an image (a CVPixelBuffer, or a CGImage
through Vision's VNCoreMLRequest; in Python a PIL image), RGB, H x W = the run's input size, already resized
(shorter side) and centre-cropped as `features.inputs.prepare_image` does; the pixels 0-255 go in as they are and the model
scales and normalises them itself. Single-label models are Core ML classifiers: `classLabel` (the top class) and
`classLabel_probs` (every class's probability); multi-label and regression models give `outputs`, a float array.
Weights and arithmetic are fp16 (Core ML's default for ML Programs, what the Neural Engine runs). The run's metadata
(the ONNX export's keys) are the model's user-defined metadata.

`--int8` stores the weights in int8 (per channel, symmetric; coremltools' `linear_quantize_weights`), computed in
fp16: quantising the activations too needs Core ML itself to calibrate, which runs on macOS only. Core ML cannot run
on Linux, so neither precision is checked against `predict` here: test an export on a Mac.
"""

from __future__ import annotations

import io
import logging
import shutil
import warnings
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from vistrain.core.files import write_folder_atomic
from vistrain.deploy.export import DeployedModel, metadata, static_model
from vistrain.model.predictor import Predictor

INPUT, OUTPUT = "image", "outputs"
DEPLOYMENT_TARGET = "iOS16"  # int8 weights (constexpr ops) need iOS 16 / macOS 13
SINGLE_LABEL = ("binary", "multiclass")


class _FromImage(torch.nn.Module):
    """Core ML's image input (float N x 3 x H x W, pixels 0-255) into the exported model (N x H x W x 3)."""

    def __init__(self, model: DeployedModel):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image.permute(0, 2, 3, 1))


@contextmanager
def _quiet() -> Iterator[None]:
    """coremltools without its progress bars (written to stderr by tqdm, which it gives no option to turn off) and
    warnings (untested torch versions, renamed outputs, channels of zeros quantised)."""
    with warnings.catch_warnings(), redirect_stderr(io.StringIO()), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def _coremltools() -> Any:
    """coremltools, imported without its warnings about scikit-learn, untested torch versions and (off macOS) its
    missing runtime."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with _quiet():
        import coremltools

    return coremltools


def write(predictor: Predictor, run: Path, path: Path, int8: bool) -> None:
    """Convert the run's model and write the package `path`; `int8`: int8 weights (module docstring)."""
    ct = _coremltools()
    size = predictor.preprocess.input_size
    model = _FromImage(static_model(predictor)).eval()
    with torch.no_grad():
        program = torch.export.export(model, (torch.zeros(1, 3, size, size),)).run_decompositions({})
    single_label = predictor.task in SINGLE_LABEL
    with _quiet():
        converted = ct.convert(
            program, inputs=[ct.ImageType(name=INPUT, shape=(1, 3, size, size), color_layout=ct.colorlayout.RGB)],
            outputs=None if single_label else [ct.TensorType(name=OUTPUT)],
            classifier_config=ct.ClassifierConfig(predictor.classes) if single_label else None,
            minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET), skip_model_load=True)
    values = metadata(predictor, batch="1") | {"precision": "fp16"}
    if int8:
        config = ct.optimize.coreml.OptimizationConfig(global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel"))
        with _quiet():
            converted = ct.optimize.coreml.linear_quantize_weights(converted, config)
        values.update(precision="int8 weights, fp16 arithmetic",
                      quantization="weights int8 per channel, symmetric (coremltools linear_quantize_weights); "
                                   "activations fp16")
    values["input"] = (f"{INPUT}: an RGB image, {size} x {size}, resized (shorter side) and centre-cropped; pixels "
                       "0-255, scaled and normalised inside")
    converted.short_description = f"vistrain {predictor.task} classifier: {', '.join(predictor.labels)}"[:200]
    converted.input_description[INPUT] = values["input"]
    for key, value in values.items():
        converted.user_defined_metadata[key] = value

    def save(folder: Path) -> None:
        package = folder / "model.mlpackage"
        converted.save(str(package))
        for part in package.iterdir():
            part.rename(folder / part.name)
        shutil.rmtree(package)

    write_folder_atomic(path, save)


def read_metadata(path: Path) -> dict[str, str]:
    """The user-defined metadata of a Core ML package (those of coremltools too), read from its spec."""
    ct = _coremltools()
    return dict(ct.utils.load_spec(str(path)).description.metadata.userDefined)

