"""Classify images with a model written by `vistrain export`, using only onnxruntime, Pillow and numpy.

    python onnx_predict.py model.onnx photo.jpg [more.jpg ...]

Prints one line per image: the file, then the class and its probability (multi-label: the labels over their
thresholds; regression: the values).
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def prepare(path: str, preprocess: dict) -> np.ndarray:
    """Resize the shorter side to input_size / crop_pct, then centre-crop input_size x input_size, as vistrain does."""
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    size, short = preprocess["input_size"], int(preprocess["input_size"] / preprocess["crop_pct"])
    width, height = image.size
    new = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    image = image.resize(new, Image.Resampling[preprocess["interpolation"].upper()])
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    return np.asarray(image.crop((left, top, left + size, top + size)))


session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
classes, task, preprocess = json.loads(meta["classes"]), meta["task"], json.loads(meta["preprocess"])
images = np.stack([prepare(path, preprocess) for path in sys.argv[2:]])  # uint8, N x size x size x 3
outputs = session.run(None, {"images": images})[0]
for path, row in zip(sys.argv[2:], outputs):
    if task == "regression":
        answer = " ".join(f"{name}={value:.4f}" for name, value in zip(classes, row))
    elif task == "multilabel":
        answer = ";".join(name for name, p, t in zip(classes, row, json.loads(meta["thresholds"])) if p >= t)
    else:
        answer = f"{classes[row.argmax()]} {row.max():.4f}"
    print(path, answer)
