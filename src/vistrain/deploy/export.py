"""Export a trained run as one self-contained model: ONNX or TorchScript here; LiteRT, Core ML and OpenVINO in their
own modules, all listed in `formats.py`.

The exported model takes uint8 RGB images, N x H x W x 3 with H = W = the run's input size, already resized
(shorter side) and centre-cropped exactly as `eval_transform(preprocess, output="uint8")` does; see
`features.inputs.prepare_image`. Inside the model: to float, /255, normalise with the run's mean and std, NCHW, backbone, head and
the task's activation, giving what `Predictor.outputs` gives (class or label probabilities, or values).
The run's classes (with their names, if it has them), task, preprocessing and tuned thresholds travel with the file as
metadata (`metadata`).
The backbone is the fp32 one whatever the features' precision in training; `--int8` quantises the whole ONNX model
(`quantized.py`). The other formats are built from the same model (`deployed_model`, `static_model`) and metadata.
"""

from __future__ import annotations

import io
import json
import warnings
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

from vistrain.backbones.preprocess import Preprocess
from vistrain.core.errors import OptionError, quoted
from vistrain.core.files import make_folder, write_atomic
from vistrain.deploy.formats import export_format
from vistrain.deploy.quantized import quantized_export
from vistrain.features.runtime import INPUT, onnx_bytes
from vistrain.features.transforms import PixelNormalize
from vistrain.model import tasks
from vistrain.model.predictor import Predictor

OUTPUT = "outputs"


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


def metadata(predictor: Predictor, batch: str = "N") -> dict[str, str]:
    """What a user of the exported file needs, as strings (JSON for lists and objects); `batch`: the images a
    call takes ("N": any number)."""
    config, size = predictor.config, predictor.preprocess.input_size
    values = {
        "classes": json.dumps(predictor.classes),
        "task": predictor.task,
        "preprocess": json.dumps(predictor.preprocess.to_dict()),
        "input": f"{INPUT}: uint8 RGB, {batch} x {size} x {size} x 3, resized (shorter side) and centre-cropped",
        "backbone": json.dumps(config.backbone.to_json()),
        "precision": "fp32",
        "vistrain_version": version("vistrain"),
    }
    if predictor.task == "multilabel":
        values["thresholds"] = json.dumps(predictor.thresholds)
    if config.class_names:
        values["class_names"] = json.dumps(config.class_names)
    return values


def export(run: str | Path, output_format: str, out: str | Path | None = None, int8: bool = False) -> Path:
    """Write RUN's model as `output_format` (a name in `formats.FORMATS`), with `int8` quantised to int8 where the
    format has an int8 version; returns the file or folder written [default: RUN/model.onnx, RUN/model-int8.onnx,
    RUN/model.tflite... (`vistrain.model.run_dir.EXPORTS`)]."""
    chosen = export_format(output_format, int8)
    predictor = Predictor.from_run(run)
    if any(part.preprocess != predictor.preprocess for part in predictor.backbone.parts):
        raise ValueError(f"{predictor.backbone.name}: the run's backbones each take their own preprocessing (their "
                         "features are cached as each computes them alone), and an exported model takes one input; "
                         "a concatenation cannot be exported")
    path = Path(out) if out else chosen.default_path(Path(run), int8)
    if path.is_dir() != chosen.folder and path.exists():
        raise OptionError(f"{quoted(path)} is a {'folder' if path.is_dir() else 'file'}: {{output_format}} {output_format} "
                          f"writes a {'folder' if chosen.folder else 'file'}")
    make_folder(path.parent, "the export's folder")
    chosen.writer()(predictor, Path(run), path, int8)
    return path


def example_images(predictor: Predictor, batch: int = 2) -> torch.Tensor:
    """A batch of black uint8 images of the run's input size, to trace or export its model with."""
    size = predictor.preprocess.input_size
    return torch.zeros(batch, size, size, 3, dtype=torch.uint8)


def static_model(predictor: Predictor) -> DeployedModel:
    """The run's whole model with its "same" paddings computed once for its input size (`static_graph.py`), for
    converters that trace shapes into constants."""
    from vistrain.features.static_graph import freeze_same_padding

    model = deployed_model(predictor)
    freeze_same_padding(model, example_images(predictor, 1))
    return model


def onnx_export(predictor: Predictor) -> bytes:
    """The run's fp32 ONNX model (any batch size), with its metadata."""
    import onnx

    with torch.no_grad():  # onnx_bytes freezes the paddings itself, then simplifies the graph
        proto = onnx.load_from_string(onnx_bytes(deployed_model(predictor), example_images(predictor), OUTPUT))
    for key, value in metadata(predictor).items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "vistrain"
    return proto.SerializeToString()


def write_onnx(predictor: Predictor, run: Path, path: Path, int8: bool) -> None:
    """The ONNX export, quantised to int8 if `int8` (`quantized.py`)."""
    data = onnx_export(predictor)
    write_atomic(path, quantized_export(data, predictor, run) if int8 else data)


def read_onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(path).metadata_props}


def write_torchscript(predictor: Predictor, run: Path, path: Path, int8: bool) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # TorchScript is deprecated upstream, yet still what many C++/mobile runtimes load
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(deployed_model(predictor), (example_images(predictor),)), buffer,
                       _extra_files=metadata(predictor))
    write_atomic(path, buffer.getvalue())
