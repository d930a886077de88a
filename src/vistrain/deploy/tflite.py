"""`vistrain export RUN --format tflite [--int8]`: the whole model as one LiteRT (TensorFlow Lite) flatbuffer, for
Android and embedded Linux.

Converted from PyTorch by litert-torch (no TensorFlow involved), for batches of one image: input `images`, uint8
1 x H x W x 3 (RGB, resized and centre-cropped as `features.inputs.prepare_image` does), output `outputs`, float32
1 x outputs (class or label probabilities, or values), signature `serving_default`. The run's metadata (the same
keys as the ONNX export's) are metadata entries of the flatbuffer, one per key, each a UTF-8 string.

`--int8` is LiteRT's own full-integer post-training quantisation (ai-edge-litert's calibrator, no other package):
int8 weights per channel and int8 activations, calibrated on the run's calibration images, the input staying uint8
and the output float32; it is checked against the fp32 model on the validation images calibration did not use
(`int8_check`), both run by the LiteRT interpreter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vistrain.core.files import write_atomic
from vistrain.deploy.export import OUTPUT, example_images, metadata, static_model
from vistrain.deploy.quantized import agreement, calibration_and_held_out
from vistrain.features.int8 import CalibrationImages
from vistrain.features.runtime import INPUT
from vistrain.model.predictor import Predictor

SIGNATURE = "serving_default"
QUANTIZATION = ("LiteRT full-integer post-training quantisation: weights int8 per channel, activations int8, "
                "ranges over {} training images; uint8 input, float32 output")


class _Named(torch.nn.Module):
    """The model with its input and output named as in the ONNX export (the signature's names)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {OUTPUT: self.model(images)}


def write(predictor: Predictor, run: Path, path: Path, int8: bool) -> None:
    """Convert the run's model and write it to `path`; `int8`: quantised and checked (module docstring)."""
    values = metadata(predictor, batch="1")
    fp32 = tflite_bytes(predictor)
    if not int8:
        write_atomic(path, with_metadata(fp32, values))
        return
    calibration, held_out = calibration_and_held_out(run, predictor)
    images = CalibrationImages(calibration, predictor.preprocess, INPUT, layout="nhwc", batch=1)
    quantized = quantize(fp32, images, tuple(example_images(predictor, batch=1).shape))
    check = {"fp32_bytes": len(fp32), "calibration_images": len(calibration),
             **agreement(runner(fp32), runner(quantized), held_out, predictor)}
    values.update(precision="int8", int8_check=json.dumps(check), quantization=QUANTIZATION.format(len(calibration)))
    write_atomic(path, with_metadata(quantized, values))


def tflite_bytes(predictor: Predictor) -> bytes:
    """The run's fp32 model converted by litert-torch, for one image at a time."""
    import litert_torch

    litert_torch.config.show_progress = False  # the library is quiet
    with torch.no_grad():
        converted = litert_torch.convert(_Named(static_model(predictor)).eval(),
                                         sample_kwargs={INPUT: example_images(predictor, batch=1)})
    return converted.model_content()


def quantize(fp32: bytes, images: CalibrationImages, shape: tuple[int, ...]) -> bytes:
    """`fp32` quantised by LiteRT's calibrator: ranges from running it on `images`, one at a time (`shape`: its
    input's)."""
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as calibration

    calibrator = calibration.CalibrationWrapper(fp32, [], [])
    calibrator.Prepare([list(shape)], SIGNATURE)
    while (batch := images.get_next()) is not None:
        calibrator.FeedTensor([batch[INPUT]], SIGNATURE)
    keep, int8 = np.dtype(np.float32).num, np.dtype(np.int8).num  # float32: the input and output types stay
    return bytes(calibrator.QuantizeModel(keep, keep, True, int8, np.dtype(np.int32).num, False, False))


def runner(model: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """`model` run by the LiteRT interpreter, one image at a time: uint8 images -> outputs."""
    from ai_edge_litert.interpreter import Interpreter

    run = Interpreter(model_content=model).get_signature_runner(SIGNATURE)
    return lambda images: np.concatenate([run(**{INPUT: image[None]})[OUTPUT] for image in images])


def with_metadata(model: bytes, values: dict[str, str]) -> bytes:
    """`model` with one metadata entry per key of `values`, each value a UTF-8 string."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    tree.metadata = tree.metadata or []
    for key, value in values.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.encode(), np.uint8)
        tree.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = key, len(tree.buffers) - 1
        tree.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata entries of a .tflite file, as strings (those of the converter too)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(path).read_bytes())
    entries = (model.Metadata(i) for i in range(model.MetadataLength()))
    return {entry.Name().decode(): model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode(errors="replace")
            for entry in entries}
