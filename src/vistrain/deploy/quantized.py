"""`vistrain export RUN --int8`: the whole exported model (uint8 NHWC images in, outputs out) quantised to int8, for
edge devices that run ONNX Runtime alone.

The recipe of issue 17 for models that leave vistrain: QDQ, weights int8 per channel in 7 bits (`reduce_range`: on
x86 CPUs without VNNI, ONNX Runtime's default kernels saturate with 8-bit weights and nobody downstream will set
`session.x64quantprecision`), uint8 activations, MinMax ranges; the pooling and the task's activation stay fp32,
the head's layers are quantised too (a 256-unit MLP head is 1.3 MB in fp32). Calibrated on the run's seeded
training images (config.json's `calibration`), else, for runs from before it was recorded, on half of the
validation images. The export is checked against the fp32 export on the validation images that calibration did
not use, and says how it did in its metadata (`int8_check`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from vistrain.data.images import UnreadableImage
from vistrain.features.inputs import prepare_image
from vistrain.features.int8 import CALIBRATION_IMAGES, CalibrationImages, calibration_set, quantize
from vistrain.features.runtime import INPUT
from vistrain.model.predictor import Predictor
from vistrain.model.run_dir import RunError, read_saved_predictions

BATCH = 32


def calibration_and_held_out(run: Path, predictor: Predictor) -> tuple[tuple[tuple[str, str], ...], list[Path]]:
    """(calibration images as (path, SHA-256), validation images calibration did not see)."""
    validation = read_saved_predictions(run, predictor.config).files
    recorded = tuple((file, digest) for file, digest in predictor.config.get("calibration", []))
    chosen = recorded[:CALIBRATION_IMAGES] or calibration_set(
        validation, predictor.config.get("training", {}).get("seed", 0), min(CALIBRATION_IMAGES, len(validation) // 2))
    used = {file for file, _ in chosen}
    held_out = [path for path in validation if str(path.resolve()) not in used and path.is_file()]
    if not chosen or not held_out:
        raise RunError(f"{run}: the int8 model cannot be {'calibrated' if not chosen else 'checked'}: none of the "
                       f"run's {'calibration' if not chosen else 'validation'} images can be read from here (moved? "
                       "runs before 2026-11-30 list them relative to the folder they were trained in: export from it)")
    return chosen, held_out


def quantized_export(fp32: bytes, predictor: Predictor, run: Path) -> bytes:
    """`fp32` (an ONNX export of `predictor`'s run, with its metadata) quantised, with the metadata and the check
    against `fp32` (`int8_check`) added."""
    import onnx

    calibration, held_out = calibration_and_held_out(run, predictor)
    with tempfile.TemporaryDirectory(prefix="vistrain-export-") as scratch:  # the quantiser reads a file
        source = Path(scratch) / "fp32.onnx"
        source.write_bytes(fp32)
        reader = CalibrationImages(calibration, predictor.preprocess, INPUT, layout="nhwc")
        int8 = quantize(source, reader, first_convs=0, reduce_range=True, quantize_head=True)
    check = {"fp32_bytes": len(fp32), "calibration_images": len(calibration),
             **agreement(onnx_runner(fp32), onnx_runner(int8), held_out, predictor)}
    proto = onnx.load_from_string(int8)
    del proto.metadata_props[:]
    values = {p.key: p.value for p in onnx.load_from_string(fp32).metadata_props}
    values.update(precision="int8", int8_check=json.dumps(check), quantization=(
        "QDQ: weights int8 per channel in 7 bits (reduce_range), activations uint8, MinMax ranges over "
        f"{len(calibration)} training images; pooling and output activation in fp32"))
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "vistrain"
    return proto.SerializeToString()


def onnx_runner(model: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX model run by ONNX Runtime with its default options (as a device would): uint8 images -> outputs."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {INPUT: images})[0]


def agreement(fp32: Callable[[np.ndarray], np.ndarray], int8: Callable[[np.ndarray], np.ndarray], paths: list[Path],
              predictor: Predictor) -> dict:
    """How the int8 model's outputs agree with the fp32 model's on the readable `paths`, each run by its own
    runtime (uint8 N x H x W x 3 images -> outputs): `images`, `top1_agreement` (single-label: the same top class;
    multi-label: the same labels over their thresholds; None for regression) and `mean_abs_difference`."""
    same, differences = [], []
    for start in range(0, len(paths), BATCH):
        images = []
        for path in paths[start : start + BATCH]:
            try:
                images.append(prepare_image(path, predictor.preprocess))
            except (OSError, UnreadableImage):
                continue
        if not images:
            continue
        a, b = fp32(np.stack(images)), int8(np.stack(images))
        differences.append(np.abs(a - b).mean(1))
        if predictor.task == "multilabel":
            cut = np.asarray(predictor.thresholds)
            same.append(((a >= cut) == (b >= cut)).all(1))
        elif predictor.task != "regression":
            same.append(a.argmax(1) == b.argmax(1))
    differences = np.concatenate(differences) if differences else np.zeros(0)
    return {"images": len(differences),
            "top1_agreement": float(np.concatenate(same).mean()) if same else None,
            "mean_abs_difference": float(differences.mean()) if len(differences) else None}
