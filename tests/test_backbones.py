"""Golden-image tests: each shipped backbone classifies real photos correctly with its own preprocessing."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from vistrain.backbones import BackboneUnavailable, get_backbone
from vistrain.transforms import eval_transform

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0():
    backbone = get_backbone("efficientnet_lite0")
    return backbone, backbone.build()


def top(backbone, model, photo, k: int) -> list[int]:
    x = eval_transform(backbone.preprocess)(Image.fromarray(photo))[None]
    with torch.no_grad():
        return model(x).topk(k).indices[0].tolist()


def test_lite0_finds_the_cat_in_chelsea(lite0):
    backbone, model = lite0
    assert CAT_CLASSES & set(top(backbone, model, skimage_data.chelsea(), 3))


def test_lite0_finds_the_espresso_in_coffee(lite0):
    backbone, model = lite0
    assert top(backbone, model, skimage_data.coffee(), 1) == [ESPRESSO]


def test_lite0_preprocessing_is_its_own():
    preprocess = get_backbone("efficientnet_lite0").preprocess
    assert (preprocess.input_size, preprocess.crop_pct, preprocess.interpolation) == (224, 0.875, "bicubic")
    assert preprocess.mean == preprocess.std == (0.5, 0.5, 0.5)
    assert preprocess.resize_size == 256


def test_feature_extractor_gives_pooled_vectors(lite0):
    backbone, _ = lite0
    with torch.no_grad():
        out = backbone.build_feature_extractor()(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, backbone.feature_dim)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(BackboneUnavailable, match="efficientnet_lite0"):
        get_backbone("no_such_net")
