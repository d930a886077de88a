"""int8 features: the static fp32 export (`runtime.py`) quantised by ONNX Runtime, calibrated on the user's own
training images.

The recipe (measured in issues 17 and 24 on cats-vs-dogs and elpv): QDQ, weights int8 per channel, activations
uint8, ranges by MinMax over a seeded sample of up to 256 training images (`calibration_set`), taken 64 at a time;
the first 3 convolutions (the most sensitive: the stem and the first depthwise block; keeping 5 was a fifth slower
for a cosine to fp32 of 0.9969 instead of 0.9964) and the global pooling with everything after it stay fp32
(`excluded_nodes`). The int8 model is cached beside the fp32 export, its file named by the calibration images'
digests and the convolutions kept (`precision.Precision.key`); features are cached apart from fp32 ones
(`Precision.identity`).
Which precision a run gets by default is `cpu.py`'s choice.

On x86 CPUs without int8 dot-product instructions (VNNI), ONNX Runtime's default uint8 x int8 kernels saturate
their 16-bit sums and the features fall apart (median cosine to fp32 0.81 on elpv); there the session asks for
exact 32-bit accumulation (`session.x64quantprecision`), which gives the same features as exact int8 arithmetic
(0.996). Every new int8 model is checked against the fp32 one on calibration images before it is used.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vistrain.backbones.preprocess import Preprocess
from vistrain.core.errors import OptionError
from vistrain.core.files import sha256_file, write_atomic
from vistrain.core.messages import say
from vistrain.features.cpu import int8_dot_products
from vistrain.features.precision import FIRST_CONVS_KEPT, Precision

if TYPE_CHECKING:
    import onnx
    import onnxruntime

CALIBRATION_IMAGES = 256
STRIDE = 64  # calibration images whose ranges are gathered at once
CHECKED_IMAGES = 32
MIN_COSINE = 0.99  # median cosine to the fp32 features a new int8 model must reach on calibration images


class Int8Unfaithful(OptionError):
    """A new int8 model's features fail their check against fp32 (`quantize_features`): `measured` says how."""

    def __init__(self, measured: str):
        self.measured = measured
        super().__init__(f"int8 features are not faithful on this CPU ({measured}): use {{precision}} fp32")


def calibration_set(paths: list[Path], seed: int, count: int = CALIBRATION_IMAGES) -> tuple[tuple[str, str], ...]:
    """Up to `count` of `paths`, drawn with `seed`, in their order: (absolute path, SHA-256) of the readable ones."""
    chosen = sorted(np.random.default_rng(seed).choice(len(paths), size=min(count, len(paths)), replace=False))
    found = []
    for index in chosen:
        try:
            found.append((str(Path(paths[index]).resolve()), sha256_file(paths[index])))
        except OSError:
            continue  # unreadable: listed as skipped when its features are computed
    return tuple(found)


def saved_model(path: Path, precision: Precision) -> bytes | None:
    """The run's copy of the int8 model cached at `path` (in `precision.saved_models`, under the same name), checked
    to load, or None when the run has none: a run predicts on a machine whose cache lacks its int8 models, or where
    its calibration images are not, without quantising again."""
    if precision.saved_models is None or not (precision.saved_models / path.name).is_file():
        return None
    import onnxruntime

    copy = precision.saved_models / path.name
    data = copy.read_bytes()
    try:
        onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime's own kinds (InvalidProtobuf, Fail...) for a damaged file
        raise ValueError(f"{copy} is damaged ({type(error).__name__}); delete it to quantise the backbone again "
                         "from the calibration images") from None
    return data


def int8_model_path(fp32_path: Path, precision: Precision) -> Path:
    """Where the int8 model of the fp32 export at `fp32_path` for `precision`'s calibration set is cached."""
    return fp32_path.with_name(f"{fp32_path.stem}-int8-{precision.key}.onnx")


def configure(options: onnxruntime.SessionOptions) -> None:
    """Session options for an int8 model: exact accumulation on CPUs without int8 dot products."""
    if not int8_dot_products():
        options.add_session_config_entry("session.x64quantprecision", "1")


def excluded_nodes(model: onnx.ModelProto, first_convs: int, quantize_head: bool = False) -> list[str]:
    """Nodes to leave in fp32, found by the graph's structure (not by names): the first `first_convs` Convs
    (`graph.node` is in topological order) and each final global pooling (no Conv after it; a squeeze-excite
    block's pooling is not final) with every node computed from it, but for its Gemm and MatMul layers when
    `quantize_head` (a trained head's weights, in an exported model)."""
    nodes = list(model.graph.node)
    feeds_a_conv: set[str] = set()  # tensors from which a Conv is reached
    for node in reversed(nodes):
        if node.op_type == "Conv" or any(output in feeds_a_conv for output in node.output):
            feeds_a_conv.update(node.input)
    after_pool: set[str] = set()
    excluded = [node.name for node in nodes if node.op_type == "Conv"][:first_convs]
    for node in nodes:
        final_pool = node.op_type in ("GlobalAveragePool", "ReduceMean") and node.output[0] not in feeds_a_conv
        if final_pool or any(name in after_pool for name in node.input):
            after_pool.update(node.output)
            if not (quantize_head and node.op_type in ("Gemm", "MatMul")):
                excluded.append(node.name)
    return excluded


class CalibrationImages:
    """ONNX Runtime's calibration reader: the images decoded a batch at a time, as `layout` ("nchw": the feature
    extractor's input; "nhwc": an exported model's) uint8 pixels; each must still have its digest."""

    def __init__(self, images: tuple[tuple[str, str], ...], preprocess: Preprocess, input_name: str,
                 layout: str = "nchw", batch: int = 16):
        from vistrain.features.transforms import View

        self.images, self.input_name, self.layout, self.batch = images, input_name, layout, batch
        self.transform, self.reduce_to = View().transform(preprocess), preprocess.resize_size
        self.set_range(0, len(images))

    def __len__(self) -> int:  # a multiple of STRIDE, as ONNX Runtime's strided calibration wants
        return -(-len(self.images) // STRIDE) * STRIDE

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, min(end_index, len(self.images))

    def pixels(self, images: tuple[tuple[str, str], ...]) -> np.ndarray:
        import torch

        from vistrain.data.images import UnreadableImage, load_rgb

        loaded = []
        for path, digest in images:
            try:
                if sha256_file(path) != digest:
                    raise ValueError(f"calibration image {path} has changed since the int8 model was calibrated")
                loaded.append(self.transform(load_rgb(Path(path), reduce_to=self.reduce_to), digest))  # as extracted
            except (OSError, UnreadableImage) as error:
                raise ValueError(f"calibration image {path} cannot be read ({error})") from None
        batch = torch.stack(loaded)
        return (batch.permute(0, 2, 3, 1) if self.layout == "nhwc" else batch).contiguous().numpy()

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        images = self.images[self.position : min(self.position + self.batch, self.end)]
        self.position += self.batch
        return {self.input_name: self.pixels(images)}


def quantize(fp32_path: Path, reader: CalibrationImages, first_convs: int, reduce_range: bool = False,
             quantize_head: bool = False) -> bytes:
    """The model at `fp32_path` prepared for quantisation (onnxruntime.quantization's `quant_pre_process`) and
    quantised: QDQ, per-channel int8 weights, uint8 activations, MinMax ranges from `reader`'s images, the nodes
    `excluded_nodes` names left fp32; as bytes. `reduce_range`: 7-bit weights, whose products cannot saturate any
    CPU's int8 kernels (for models that leave vistrain)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="vistrain-int8-") as scratch:  # the tools read and write files
        prepared, out = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=excluded_nodes(onnx.load(prepared), first_convs, quantize_head),
                        extra_options={"CalibStridedMinMax": STRIDE})
        return out.read_bytes()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def verdict_path(path: Path) -> Path:
    """Where the failed check of the int8 model that would be cached at `path` is kept: beside it, per kind of
    kernel (exact accumulation on CPUs without int8 dot products, see `configure`)."""
    return path.with_name(f"{path.stem}.unfaithful-{'dot' if int8_dot_products() else 'exact'}.txt")


def read_verdict(path: Path) -> str:
    """What a kept failed check measured (its first 500 bytes; the file is untrusted, shown as text only)."""
    with path.open("rb") as file:
        return file.read(500).decode("utf-8", "replace").strip() or "no measurement kept"


def quantize_features(fp32_path: Path, path: Path, precision: Precision, preprocess: Preprocess, input_name: str,
                      options: onnxruntime.SessionOptions) -> None:
    """Write the int8 feature extractor for `precision` to `path`, atomically: the run's copy if it has one
    (`saved_model`), else quantised here once it has passed the check: on
    the first CHECKED_IMAGES calibration images, run with `options`, its features' median cosine to the fp32
    export's must reach MIN_COSINE (`Int8Unfaithful` otherwise, naming what was measured, which is kept beside
    the model, `verdict_path`, so that the next run with the same calibration images does not quantise again)."""
    import onnxruntime

    copy = saved_model(path, precision)
    if copy is not None:
        write_atomic(path, copy)
        return
    verdict = verdict_path(path)
    if verdict.is_file():  # this model failed its check before: not quantised again only to fail again
        raise Int8Unfaithful(f"{read_verdict(verdict)}; measured once, kept in {verdict.name}")
    say(f"quantising the backbone to int8, calibrated on {len(precision.calibration)} training images "
        f"(once: cached as {path.name})")
    reader = CalibrationImages(precision.calibration, preprocess, input_name)
    data = quantize(fp32_path, reader, FIRST_CONVS_KEPT)
    pixels = {input_name: reader.pixels(precision.calibration[:CHECKED_IMAGES])}
    fp32 = onnxruntime.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
    int8 = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    agreement = cosines(fp32.run(None, pixels)[0], int8.run(None, pixels)[0])
    measured = f"median cosine {np.median(agreement):.4f}, lowest {agreement.min():.4f}"
    if np.median(agreement) < MIN_COSINE:
        measured = (f"{measured} to the fp32 features on {len(agreement)} calibration images; at least {MIN_COSINE} "
                    "needed")
        write_atomic(verdict, measured.encode())
        raise Int8Unfaithful(measured)
    say(f"int8 features against fp32 on {len(agreement)} calibration images: {measured}")
    write_atomic(path, data)
