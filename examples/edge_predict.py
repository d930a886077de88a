"""Classify images with a LiteRT or OpenVINO model written by `vistrain export --format tflite|openvino`, using only
the runtime (ai-edge-litert or openvino), Pillow and numpy.

    python edge_predict.py model.tflite photo.jpg [more.jpg ...]
    python edge_predict.py model_openvino photo.jpg [more.jpg ...]

Prints one line per image: the file, then the class and its probability (multi-label: the labels over their
thresholds; regression: the values), as examples/onnx_predict.py does.
"""

import json
import sys
from pathlib import Path

import numpy as np
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


def litert(path: str):
    """The metadata of a .tflite file and a function running it, one image at a time (its batch is 1)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    model = schema.Model.GetRootAs(Path(path).read_bytes())
    entries = (model.Metadata(i) for i in range(model.MetadataLength()))
    meta = {e.Name().decode(): model.Buffers(e.Buffer()).DataAsNumpy().tobytes().decode("utf-8", "replace")
            for e in entries}
    run = Interpreter(model_path=path).get_signature_runner("serving_default")
    return meta, lambda images: np.concatenate([run(images=image[None])["outputs"] for image in images])


def openvino(path: str):
    """The metadata of an OpenVINO IR folder and a function running it on this machine's CPU."""
    import openvino as ov

    model = ov.Core().read_model(Path(path) / "model.xml")
    meta = {key: value.astype(str) for key, value in model.get_rt_info()["vistrain"].items()}
    compiled = ov.Core().compile_model(model, "CPU")
    return meta, lambda images: compiled(images)[0]


meta, run = (openvino if Path(sys.argv[1]).is_dir() else litert)(sys.argv[1])
classes, task, preprocess = json.loads(meta["classes"]), meta["task"], json.loads(meta["preprocess"])
images = np.stack([prepare(path, preprocess) for path in sys.argv[2:]])  # uint8, N x size x size x 3
outputs = run(images)
for path, row in zip(sys.argv[2:], outputs):
    if task == "regression":
        answer = " ".join(f"{name}={value:.4f}" for name, value in zip(classes, row))
    elif task == "multilabel":
        answer = ";".join(name for name, p, t in zip(classes, row, json.loads(meta["thresholds"])) if p >= t)
    else:
        answer = f"{classes[row.argmax()]} {row.max():.4f}"
    print(path, answer)
