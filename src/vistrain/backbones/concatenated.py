"""Several backbones as one: `--backbone efficientnet_lite0+efficientnet_lite2` concatenates their features.

Features are computed and cached part by part (`Backbone.parts`), each part with its own preprocessing from one
decode of each image (`features.inputs`): a part's cache is the one it has alone, so `efficientnet_lite0` trained
alone, then `efficientnet_lite0+efficientnet_lite2`, computes only Lite2's features, and the other way round.
The concatenation's own `preprocess` is its largest part's: the one input of the module built here (`Concatenated`),
which fine-tuning trains (its parts all see that input) and which runs from before parts took their own
preprocessing are exported with.
"""

from __future__ import annotations

import torch
from torch import nn

from vistrain.backbones.registry import Backbone


class Concatenated(nn.Module):
    """Feature extractors side by side: images -> their pooled features, concatenated."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(images) for part in self.parts], dim=1)

    def reset_classifier(self, num_classes: int) -> None:
        """The parts are feature extractors already (see `Backbone.build_feature_extractor`)."""


def concatenated_backbone(parts: list[Backbone]) -> Backbone:
    """One backbone whose features are the parts' features, concatenated in order."""
    largest = max(parts, key=lambda part: part.preprocess.input_size)
    return Backbone(
        name="+".join(part.name for part in parts),
        build=lambda: Concatenated([part.build_feature_extractor() for part in parts]).eval(),
        preprocess=largest.preprocess,
        feature_dim=sum(part.feature_dim for part in parts),
        weights=" + ".join(part.weights for part in parts),
        license=", ".join(sorted({part.license for part in parts})),
        parts=tuple(parts),
    )
