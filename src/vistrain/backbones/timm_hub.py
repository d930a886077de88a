"""`timm:ARCH[.TAG]`: any timm model, with its pretrained weights from the Hugging Face Hub or from a file."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vistrain.backbones.downloads import ensure_downloadable, torch_hub_cached, unavailable_message
from vistrain.backbones.registry import Backbone, BackboneUnavailable
from vistrain.backbones.weights_file import classifier_outputs, file_identity, load_exactly, load_state_dict_file
from vistrain.backbones.preprocess import Preprocess

if TYPE_CHECKING:
    from timm.models import PretrainedCfg
    from torch import nn


def timm_backbone(name: str, arch: str, weights_file: Path | None) -> Backbone:
    """The timm model `arch` (a name, with a pretrained tag or not) and the preprocessing of its pretrained config."""
    import timm
    import torch

    if not timm.is_model(arch):
        raise BackboneUnavailable(f"{name}: timm has no model {arch!r} (timm.list_models() lists them)")
    try:
        cfg = timm.get_pretrained_cfg(arch)
    except RuntimeError as error:  # an unknown pretrained tag
        raise BackboneUnavailable(f"{name}: {error}") from None
    if weights_file is None and not (cfg.hf_hub_id or cfg.url):
        raise BackboneUnavailable(f"{name}: timm has no pretrained weights for {arch}; give a weights file as "
                                  f"{name}@FILE")
    with torch.device("meta"):  # the architecture alone, to read its feature width without allocating weights
        architecture = timm.create_model(arch, pretrained=False)
    if weights_file is None:
        weights = f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
        build = partial(_from_hub, name, arch, cfg)
        terms = cfg.license or "see the model card"
    else:
        weights = file_identity(weights_file)
        build = partial(_from_file, name, arch, cfg, weights_file)
        terms = "that of the weights file"
    return Backbone(
        name=name,
        build=build,
        preprocess=_preprocess(name, cfg),
        feature_dim=architecture.head_hidden_size,  # the width after reset_classifier(0) (not always num_features)
        weights=weights,
        license=terms,
    )


def _preprocess(name: str, cfg: PretrainedCfg) -> Preprocess:
    """Resize, centre crop and normalisation from timm's resolved data config (a "squash" crop mode is
    approximated by the centre crop)."""
    from timm.data import resolve_data_config

    data = resolve_data_config(pretrained_cfg=cfg.to_dict())
    _, height, width = data["input_size"]
    if height != width:
        raise BackboneUnavailable(f"{name}: vistrain needs square inputs; this model takes {height}x{width}")
    return Preprocess(input_size=height, crop_pct=data["crop_pct"], interpolation=data["interpolation"],
                      mean=tuple(data["mean"]), std=tuple(data["std"]))


def _from_hub(name: str, arch: str, cfg: PretrainedCfg) -> nn.Module:
    import timm

    cached = _cached(cfg)
    if cached is not None:  # load it directly: the hub client would first retry the network for a minute
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(cached)}).eval()
    url = _download_url(cfg)
    ensure_downloadable(name, url)
    try:
        return timm.create_model(arch, pretrained=True).eval()
    except OSError as error:
        raise BackboneUnavailable(unavailable_message(name, url, f"the download failed ({error})")) from None


def _from_file(name: str, arch: str, cfg: PretrainedCfg, weights_file: Path) -> nn.Module:
    import timm

    state = load_state_dict_file(weights_file)
    options = {}
    if cfg.classifier:  # the file's classifier decides the classes: ImageNet's, a fine-tuned one's, or none
        classifier = cfg.classifier if isinstance(cfg.classifier, str) else cfg.classifier[0]
        options["num_classes"] = classifier_outputs(state, classifier) or 0
    model = timm.create_model(arch, pretrained=False, **options)
    load_exactly(model, state, name)
    return model.eval()


def _cached(cfg: PretrainedCfg) -> Path | None:
    """The weights file timm would download, if an earlier download left it in the hub's or torch's cache."""
    if not cfg.hf_hub_id:
        return torch_hub_cached(cfg.url)
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = cfg.hf_hub_id.partition("@")
    for file_name in [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]:
        path = try_to_load_from_cache(repo, file_name, revision=revision or None)
        if isinstance(path, str):
            return Path(path)
    return None


def _download_url(cfg: PretrainedCfg) -> str:
    if not cfg.hf_hub_id:
        return cfg.url
    from huggingface_hub import hf_hub_url

    repo, _, revision = cfg.hf_hub_id.partition("@")
    return hf_hub_url(repo, cfg.hf_hub_filename or "model.safetensors", revision=revision or None)
