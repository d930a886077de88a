"""`vistrain export RUN --format openvino [--int8]`: the whole model as an OpenVINO IR folder (model.xml and
model.bin), for Intel CPUs, GPUs and NPUs.

Converted by OpenVINO from the ONNX export, so it takes what that takes: input `images`, uint8 N x H x W x 3 (RGB,
resized and centre-cropped as `features.inputs.prepare_image` does; any batch size), output `outputs`, float32 (class or label
probabilities, or values). Weights are stored in fp32; OpenVINO picks the arithmetic per device (on CPUs with AMX or
AVX-512 BF16 it runs bf16 unless told `INFERENCE_PRECISION_HINT: f32`). The run's metadata (the ONNX export's keys)
are in the IR's runtime information under `vistrain` (`model.get_rt_info(["vistrain", "classes"])`).

`--int8` converts the ONNX int8 export (`quantized.py`: QDQ, calibrated on the run's training images), which OpenVINO
runs with int8 kernels, and checks it against the fp32 IR in f32 on the validation images calibration did not use
(`int8_check`), both run by OpenVINO.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from vistrain.core.files import write_folder_atomic
from vistrain.deploy.export import metadata, onnx_export
from vistrain.deploy.quantized import agreement, calibration_and_held_out, quantized_export
from vistrain.model.predictor import Predictor

if TYPE_CHECKING:
    import openvino

XML = "model.xml"
SECTION = "vistrain"


def write(predictor: Predictor, run: Path, path: Path, int8: bool) -> None:
    """Convert the run's ONNX export (int8 if `int8`, then checked) and write the IR folder `path`."""
    values = metadata(predictor)
    onnx = onnx_export(predictor)
    model = converted(onnx)
    if int8:
        calibration, held_out = calibration_and_held_out(run, predictor)
        int8_onnx = quantized_export(onnx, predictor, run)
        quantized = converted(int8_onnx)
        check = {"fp32_bytes": len(onnx), "calibration_images": len(calibration),
                 **agreement(runner(model, {"INFERENCE_PRECISION_HINT": "f32"}), runner(quantized), held_out, predictor)}
        values.update(precision="int8", int8_check=json.dumps(check),
                      quantization=_onnx_metadata(int8_onnx)["quantization"])
        model = quantized
    for key, value in values.items():
        model.set_rt_info(value, [SECTION, key])

    def save(folder: Path) -> None:
        import openvino

        openvino.save_model(model, folder / XML, compress_to_fp16=False)

    write_folder_atomic(path, save)


def converted(model: bytes) -> openvino.Model:
    """An ONNX model converted to OpenVINO's, without the ONNX metadata (the converter would copy it)."""
    import onnx
    import openvino

    proto = onnx.load_from_string(model)
    del proto.metadata_props[:]
    with tempfile.TemporaryDirectory(prefix="vistrain-openvino-") as scratch:  # the converter reads a file
        source = Path(scratch) / "model.onnx"
        source.write_bytes(proto.SerializeToString())
        return openvino.convert_model(source)


def runner(model: openvino.Model, config: dict[str, str] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """`model` compiled for this CPU (with OpenVINO's defaults but for `config`): uint8 images -> outputs."""
    import openvino

    compiled = openvino.Core().compile_model(model, "CPU", config or {})
    return lambda images: compiled(images)[0]


def read_metadata(path: Path) -> dict[str, str]:
    """The run's metadata in an exported IR folder."""
    import openvino

    info = openvino.Core().read_model(Path(path) / XML).get_rt_info()
    return {key: value.astype(str) for key, value in info[SECTION].items()} if SECTION in info else {}


def _onnx_metadata(model: bytes) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load_from_string(model).metadata_props}
