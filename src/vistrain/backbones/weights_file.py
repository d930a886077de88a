"""Weights from a file the user supplies (`timm:ARCH@FILE`, `torchvision:ARCH@FILE`).

FILE is a .safetensors file, or a torch state dict (`torch.save(model.state_dict(), FILE)`) read with
`weights_only=True`, so it runs no code. Its keys must be those of the timm or torchvision model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vistrain.backbones.registry import BackboneUnavailable
from vistrain.core.files import sha256_file

if TYPE_CHECKING:
    import torch
    from torch import nn


def file_identity(path: Path) -> str:
    """`sha256:<digest>`: part of the feature-cache key, so features are computed again when the file changes."""
    return f"sha256:{sha256_file(path, max_bytes=None)}"


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in `path`, by name."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # each format has its own errors for a file of the wrong kind
        raise BackboneUnavailable(f"{path}: not a .safetensors file nor a torch state dict ({error})") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise BackboneUnavailable(f"{path}: holds no state dict (name -> tensor); "
                                  "save one with torch.save(model.state_dict(), path)")
    return state


def classifier_outputs(state: dict[str, torch.Tensor], classifier: str) -> int | None:
    """The classes of the classifier layer named `classifier` in `state`, if it has one."""
    weight = state.get(f"{classifier}.weight")
    return None if weight is None else weight.shape[0]


def load_exactly(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Load `state` into `model`: every tensor, with nothing missing or left over."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise BackboneUnavailable(f"{name}: the weights file does not fit the model: {error}") from None
