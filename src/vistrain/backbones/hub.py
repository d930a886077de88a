"""Backbones named after a timm or torchvision model, with downloaded weights or weights from a file.

- `timm:ARCH[.TAG]`: a timm model with its pretrained weights from the Hugging Face Hub (kept in its cache).
- `torchvision:ARCH[.WEIGHTS]`: a torchvision classification model with its weights (default: `DEFAULT`).
- either one with `@FILE`: the same architecture and preprocessing, weights from FILE (.safetensors or a torch
  state dict) instead of a download.
Preprocessing always follows the named weights' pretrained config. Without a network, or with
VISTRAIN_OFFLINE=1, weights that are not cached fail in seconds (see `downloads`).
"""

from __future__ import annotations

from pathlib import Path

from vistrain.backbones.registry import NAMING_HELP, Backbone, BackboneUnavailable


def hub_backbone(name: str) -> Backbone:
    """The backbone for `timm:...` or `torchvision:...`, with an absolute path after any `@`."""
    source, _, spec = name.partition(":")
    arch, at, file = spec.partition("@")
    weights_file = Path(file).expanduser().resolve() if at else None
    if weights_file is not None and not weights_file.is_file():
        raise BackboneUnavailable(f"{name}: no weights file {weights_file}")
    canonical = f"{source}:{arch}" + (f"@{weights_file}" if weights_file else "")
    if source == "timm":
        from vistrain.backbones.timm_hub import timm_backbone

        return timm_backbone(canonical, arch, weights_file)
    if source == "torchvision":
        from vistrain.backbones.torchvision_hub import torchvision_backbone

        return torchvision_backbone(canonical, arch, weights_file)
    raise BackboneUnavailable(f"unknown backbone {name!r}. {NAMING_HELP}")
