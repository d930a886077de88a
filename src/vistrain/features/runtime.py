"""Backbone feature extractors on ONNX Runtime: exported to ONNX once, cached on disk, run as inference sessions.

On a CPU, ONNX Runtime runs EfficientNet-Lite0 several times as fast as torch eager, with the same features
(to about 1e-5). The graph's shapes are static but for the batch axis (`static_graph.py`). The export takes
seconds and is kept in the cache directory, one file per backbone, weights, preprocessing and export format, with
any int8 version of it beside it (`int8.py`). Each is written to a temporary file and renamed into place, so runs at
the same time or interrupted ones never leave a half-written model behind.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vistrain.backbones import Backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.core.files import make_folder, sha256_text, write_atomic
from vistrain.core.messages import warn
from vistrain.features.cpu import resolve_precision
from vistrain.features.inputs import backbone_inputs
from vistrain.features.int8 import Int8Unfaithful, configure, int8_model_path, quantize_features
from vistrain.features.precision import FP32, Precision

if TYPE_CHECKING:
    import onnxruntime
    import torch
    from torch import nn

EXPORT_FORMAT = 3  # bump when the export changes (opset, graph, names), to export again
OPSET = 17
INPUT, OUTPUT = "images", "features"


def model_path(directory: Path, backbone: Backbone, preprocess: Preprocess) -> Path:
    """Where the ONNX export of `backbone`'s feature extractor for `preprocess` is cached."""
    identity = json.dumps(
        {"backbone": backbone.name, "weights": backbone.weights, "preprocess": preprocess.to_dict(),
         "format": EXPORT_FORMAT},
        sort_keys=True,
    )
    return directory / f"backbone-{backbone.file_stem}-{sha256_text(identity)}.onnx"


def pixel_feature_extractor(backbone: Backbone, preprocess: Preprocess) -> nn.Module:
    """uint8 N x 3 x H x W pixels (see `transforms.PixelNormalize`) -> pooled feature vectors."""
    from torch import nn  # slow to import: only when needed

    from vistrain.features.transforms import PixelNormalize

    return nn.Sequential(PixelNormalize(preprocess), backbone.build_feature_extractor()).eval()


def onnx_bytes(model: nn.Module, example: torch.Tensor, output: str) -> bytes:
    """`model` (input `images` like `example`, any batch size) exported to ONNX at OPSET, as bytes. Its TensorFlow
    "same" padding is first frozen for `example`'s image size, in place, and the graph simplified
    (`static_graph.py`)."""
    import torch  # slow to import: only when exporting

    from vistrain.features.static_graph import freeze_same_padding, simplify

    frozen = freeze_same_padding(model, example)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The torch.export-based exporter needs onnxscript; the TorchScript one exports timm CNNs exactly.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)  # `simplify` folds what torch leaves
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=[output], dynamic_axes={INPUT: {0: "batch"}, output: {0: "batch"}})
    return simplify(buffer.getvalue()) if frozen else buffer.getvalue()


def export_feature_extractor(backbone: Backbone, preprocess: Preprocess, path: Path) -> None:
    """Export `pixel_feature_extractor` to `path`, atomically."""
    import torch

    example = torch.zeros(2, 3, preprocess.input_size, preprocess.input_size, dtype=torch.uint8)
    make_folder(path.parent, "the feature cache")
    write_atomic(path, onnx_bytes(pixel_feature_extractor(backbone, preprocess), example, OUTPUT))


def feature_session(backbone: Backbone, preprocess: Preprocess, directory: Path, threads: int,
                    precision: Precision = FP32) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session of `backbone`'s feature extractor in `precision`, exported (and quantised, see
    `int8.py`) into `directory` on first use; a cached model that cannot be loaded is made again."""
    import onnxruntime  # optional at run time: callers fall back to torch when it is missing

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # Idle threads sleep instead of spinning, leaving the cores to the threads that decode images.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = model_path(directory, backbone, preprocess)
    exported = _load(path, lambda: export_feature_extractor(backbone, preprocess, path), options,
                     "ONNX export", "exporting the backbone again")
    if precision.name == "fp32":
        return exported
    configure(options)
    int8 = int8_model_path(path, precision)
    return _load(int8, lambda: quantize_features(path, int8, precision, preprocess, INPUT, options), options,
                 "int8 model", "quantising it again")


def chosen_precision(asked: str, calibration: tuple[tuple[str, str], ...], backbone: Backbone, directory: Path,
                     trains_backbone: bool = False) -> tuple[Precision, str]:
    """(the precision `asked` for ("auto", "fp32" or "int8") resolves to, why): `cpu.resolve_precision`'s
    choice, calibrated on `calibration` when int8; under auto, fp32 when its int8 models fail their check
    (`int8_or_fp32`)."""
    name, why = resolve_precision(asked, trains_backbone)
    precision = Precision(name, calibration if name == "int8" else ())
    return (precision if why == "asked for" else int8_or_fp32(backbone, directory, precision)), why


def int8_or_fp32(backbone: Backbone, directory: Path, precision: Precision) -> Precision:
    """`precision`, or fp32 (with a warning saying what was measured) when its int8 models of `backbone` (made and
    checked here, once: cached in `directory`) fail their check on these images: `--precision auto` must not stop a
    run that fp32 can do (8 x 8 grey digits upscaled to 224 px give int8 features a median cosine of 0.976)."""
    if precision.name != "int8":
        return precision
    try:
        for part, part_preprocess in backbone_inputs(backbone, backbone.preprocess):
            feature_session(part, part_preprocess, directory, 1, precision)
    except Int8Unfaithful as error:
        warn(f"warning: int8 features are not faithful on these images ({error.measured}); computing fp32 features "
             "instead")
        return FP32
    return precision


def int8_model_files(backbone: Backbone, preprocess: Preprocess, directory: Path, precision: Precision) -> list[Path]:
    """The int8 models cached in `directory` that compute `backbone`'s features for `preprocess` in `precision`
    (a concatenation: one per part), once `feature_session` has made them."""
    return [int8_model_path(model_path(directory, part, part_preprocess), precision)
            for part, part_preprocess in backbone_inputs(backbone, preprocess)]


def _load(path: Path, make: Callable[[], None], options: onnxruntime.SessionOptions, what: str,
          again: str) -> onnxruntime.InferenceSession:
    """A session of the model cached at `path`, made first if it is not there, and made again (saying so) if
    ONNX Runtime cannot load it."""
    import onnxruntime

    cached = path.exists()
    if not cached:
        make()
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime's own kinds (InvalidProtobuf, Fail...) for a damaged file
        if not cached:
            raise
        warn(f"warning: the cached {what} {path} cannot be loaded ({type(error).__name__}); {again}")
        make()
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
