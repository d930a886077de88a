"""`torchvision:ARCH[.WEIGHTS]`: torchvision's classification models, with its weights or weights from a file.

Imported only when such a backbone is asked for (it imports torch and torchvision).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from vistrain.backbones.downloads import ensure_downloadable, torch_hub_cached, unavailable_message
from vistrain.backbones.registry import Backbone, BackboneUnavailable
from vistrain.backbones.weights_file import classifier_outputs, file_identity, load_exactly, load_state_dict_file
from vistrain.backbones.preprocess import Preprocess


class TorchvisionClassifier(nn.Module):
    """A torchvision classifier with timm's `reset_classifier(0)`: its last linear layer is the classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def reset_classifier(self, num_classes: int) -> None:
        """Remove the classifier, so that the model gives the features it was fed (only 0 classes is supported)."""
        if num_classes != 0:
            raise ValueError("a torchvision backbone's classifier can only be removed (num_classes=0)")
        parent, _, child = last_linear(self.model).rpartition(".")
        setattr(self.model.get_submodule(parent), child, nn.Identity())


def last_linear(model: nn.Module) -> str:
    """The name of the model's last linear layer: the classifier of every torchvision model that has one."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise BackboneUnavailable(f"{type(model).__name__} has no linear classifier to remove")
    return names[-1]


def torchvision_backbone(name: str, arch: str, weights_file: Path | None) -> Backbone:
    """The torchvision model `arch` (MODEL or MODEL.WEIGHTS) and the preprocessing of those weights."""
    model_name, _, weights_name = arch.partition(".")
    if model_name not in models.list_models(module=models):
        raise BackboneUnavailable(f"{name}: torchvision has no classification model {model_name!r} "
                                  "(torchvision.models.list_models(torchvision.models) lists them)")
    choices = models.get_model_weights(model_name)
    try:
        weights = choices[weights_name or "DEFAULT"]
    except KeyError:
        raise BackboneUnavailable(f"{name}: {model_name} has no weights {weights_name!r}; it has "
                                  f"{', '.join(choice.name for choice in choices)}") from None
    architecture = models.get_model(model_name)  # random weights: its layer names and sizes
    classifier = last_linear(architecture)
    if weights_file is None:
        build = partial(_from_hub, name, model_name, weights)
        identity = weights.url
    else:
        build = partial(_from_file, name, model_name, classifier, weights_file)
        identity = file_identity(weights_file)
    return Backbone(
        name=name,
        build=build,
        preprocess=_preprocess(weights),
        feature_dim=architecture.get_submodule(classifier).in_features,
        weights=identity,
        license="BSD-3-Clause (torchvision)" if weights_file is None else "that of the weights file",
    )


def _preprocess(weights: models.WeightsEnum) -> Preprocess:
    """The weights' own eval transform (resize the shorter side, centre crop), e.g. 232 -> 224 for ResNet50 V2."""
    transform = weights.transforms()
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    return Preprocess(input_size=crop, crop_pct=crop / resize, interpolation=transform.interpolation.value,
                      mean=tuple(transform.mean), std=tuple(transform.std))


def _from_hub(name: str, model_name: str, weights: models.WeightsEnum) -> nn.Module:
    if torch_hub_cached(weights.url) is None:
        ensure_downloadable(name, weights.url)
    try:
        model = models.get_model(model_name, weights=weights)
    except OSError as error:
        raise BackboneUnavailable(unavailable_message(name, weights.url, f"the download failed ({error})")) from None
    return TorchvisionClassifier(model).eval()


def _from_file(name: str, model_name: str, classifier: str, weights_file: Path) -> nn.Module:
    state = load_state_dict_file(weights_file)
    classes = classifier_outputs(state, classifier)
    model = models.get_model(model_name, **({} if classes is None else {"num_classes": classes}))
    load_exactly(model, state, name)
    return TorchvisionClassifier(model).eval()
