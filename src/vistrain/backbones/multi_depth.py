"""Features from several depths: the pooled outputs of chosen stages of `model.blocks` (timm EfficientNet and the
like), concatenated with the backbone's usual pooled features, in one forward pass.

Mid-level stages keep texture and thin lines that the last stage has abstracted away: what helps on images far
from ImageNet (solar cells, textures, defects). The stages are part of the backbone's weights identity, so the
feature cache and the ONNX export keep them apart from the plain backbone's.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from vistrain.backbones.registry import Backbone
from vistrain.core.errors import OptionError


class MultiDepth(nn.Module):
    """images -> [mean-pooled output of blocks[i] for i in stages] + the usual pooled features, concatenated."""

    def __init__(self, model: nn.Module, stages: tuple[int, ...]):
        super().__init__()
        self.model, self.stages = model, stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.bn1(m.conv_stem(images))
        pooled = []
        for index, stage in enumerate(m.blocks):
            x = stage(x)
            if index in self.stages:
                pooled.append(x.mean((2, 3)))
        pooled.append(m.forward_head(m.bn2(m.conv_head(x)), pre_logits=True))
        return torch.cat(pooled, 1)

    def reset_classifier(self, num_classes: int) -> None:
        """Already a feature extractor (see `Backbone.build_feature_extractor`)."""


def stage_channels(model: nn.Module) -> list[int]:
    """The number of channels each stage of model.blocks puts out."""
    out = []
    for stage in model.blocks:
        last = stage[-1]
        conv = getattr(last, "conv_pwl", None) or getattr(last, "conv_pw", None)
        out.append(conv.out_channels)
    return out


def with_stages(base: Backbone, stages: tuple[int, ...]) -> Backbone:
    """`base` whose features also hold the pooled outputs of model.blocks[i] for i in `stages`."""
    if not stages:
        return base
    model = base.build()
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not all(hasattr(model, a) for a in ("conv_stem", "conv_head")):
        raise OptionError(f"{{feature_stages}} needs an EfficientNet-like backbone (model.blocks); "
                          f"{base.name} is a {type(model).__name__}")
    if not all(0 <= i < len(blocks) for i in stages):
        raise OptionError(f"{{feature_stages}} {','.join(map(str, stages))}: {base.name} has stages 0 to "
                          f"{len(blocks) - 1}")
    channels = stage_channels(model)

    def build() -> nn.Module:
        inner = base.build()
        inner.reset_classifier(0)
        return MultiDepth(inner, stages).eval()

    return replace(base, build=build, feature_dim=base.feature_dim + sum(channels[i] for i in stages),
                   weights=f"{base.weights}; plus pooled stages {','.join(map(str, stages))}")
