"""A static-shape ONNX graph for backbones with TensorFlow "same" padding (timm's `Conv2dSame`: every
EfficientNet-Lite, every `tf_` model).

`Conv2dSame` computes its padding from the input size at every call, so the exported graph carries Shape, Gather,
Ceil and Pad arithmetic for it (600 nodes for Lite0 instead of 97). The input size is fixed by the preprocessing,
so `freeze_same_padding` computes each padding once; `simplify` folds what became constant (ONNX Runtime's basic,
hardware-independent optimisations, as onnxruntime.quantization's `quant_pre_process` does) and moves each zero Pad into the Conv's own `pads`
(`fuse_pad_into_conv`). The batch axis stays dynamic, and the features are those of the dynamic graph, bit for bit
(`tests/test_static_graph.py`). Models without `Conv2dSame` are left exactly as they were.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import onnx


class StaticSamePadConv2d(nn.Conv2d):
    """A `Conv2dSame` whose padding was computed once, for one input size (`static_pad`: left, right, top,
    bottom)."""

    static_pad: tuple[int, int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.static_pad), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def freeze_same_padding(model: nn.Module, example: torch.Tensor) -> int:
    """Give every `Conv2dSame` in `model` the constant padding it computes for inputs like `example` (one forward
    pass records each one's input size), in place: weights and state-dict keys are kept. Returns how many."""
    from timm.layers import Conv2dSame
    from timm.layers.padding import pad_same_arg

    sizes: dict[nn.Module, tuple[int, int]] = {}
    hooks = [module.register_forward_pre_hook(lambda m, args: sizes.__setitem__(m, tuple(args[0].shape[-2:])))
             for module in model.modules() if isinstance(module, Conv2dSame)]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    for module, size in sizes.items():
        module.static_pad = tuple(int(p) for p in pad_same_arg(size, module.weight.shape[-2:], module.stride,
                                                                 module.dilation))
        module.__class__ = StaticSamePadConv2d
    return len(sizes)


def simplify(model: bytes) -> bytes:
    """Fold the constant parts of an exported graph (ONNX Runtime's basic optimisations: constant folding and
    the like, the same on every machine), then the zero Pads into their Convs."""
    import onnx
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3  # not the notes about the initializers that folding leaves unused
    with tempfile.TemporaryDirectory(prefix="vistrain-onnx-") as scratch:  # ONNX Runtime writes it to a file
        options.optimized_model_filepath = str(Path(scratch) / "folded.onnx")
        onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        proto = onnx.load(options.optimized_model_filepath)
    fuse_pad_into_conv(proto)
    return proto.SerializeToString()


def fuse_pad_into_conv(model: onnx.ModelProto) -> int:
    """Remove every constant zero Pad of the spatial axes whose consumers are all Convs, adding its amounts to the
    Convs' `pads` (ONNX Conv takes asymmetric pads), and the initializers no node uses any more. Returns how many
    Pads were removed."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {output.name for output in graph.output}
    removed = []
    for node in graph.node:
        if node.op_type != "Pad" or node.input[1] not in constants or node.output[0] in outputs:
            continue
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        value = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
        pads = [int(p) for p in constants[node.input[1]]]
        convs = consumers.get(node.output[0], [])
        if (mode != b"constant" or value is None or np.any(value != 0) or (len(node.input) > 3 and node.input[3])
                or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or not convs
                or any(c.op_type != "Conv" for c in convs)
                or any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for c in convs for a in c.attribute)):
            continue
        for conv in convs:  # ONNX pads: top, left, bottom, right; Pad's: N, C, H, W begins, then N, C, H, W ends
            old = next((a for a in conv.attribute if a.name == "pads"), None)
            top, left, bottom, right = list(old.ints) if old is not None else [0, 0, 0, 0]
            if old is not None:
                conv.attribute.remove(old)
            conv.attribute.append(onnx.helper.make_attribute(
                "pads", [top + pads[2], left + pads[3], bottom + pads[6], right + pads[7]]))
            conv.input[0] = node.input[0]
        removed.append(node)
    for node in removed:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:  # the removed Pads' amounts
        graph.initializer.remove(tensor)
    return len(removed)
