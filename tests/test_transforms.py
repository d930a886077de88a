"""The eval transform resizes and crops exactly as torchvision's classification preset does, without importing it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from vistrain.backbones.preprocess import Preprocess
from vistrain.features.transforms import eval_transform


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("height, width", [(375, 500), (500, 375), (256, 256), (300, 1000), (224, 230), (257, 256),
                                           (1200, 900), (10, 20)])
def test_eval_transform_is_torchvision_s_resize_and_centre_crop(interpolation: str, height: int, width: int):
    preprocess = Preprocess(224, 0.875, interpolation, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    image = Image.fromarray(np.random.default_rng(height * width).integers(0, 256, (height, width, 3), np.uint8))
    crop = v2.Compose([v2.PILToTensor(),
                       v2.Resize(preprocess.resize_size, interpolation=InterpolationMode(interpolation), antialias=True),
                       v2.CenterCrop(preprocess.input_size)])
    normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(list(preprocess.mean), list(preprocess.std))])
    expected = crop(image)
    assert torch.equal(eval_transform(preprocess, output="uint8")(image), expected)
    assert torch.allclose(eval_transform(preprocess)(image), normalize(expected), atol=1e-5)


def test_unknown_outputs_and_interpolations_are_refused():
    preprocess = Preprocess(224, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="outputs: normalized, uint8"):
        eval_transform(preprocess, output="float")
    with pytest.raises(ValueError, match="supported: bilinear, bicubic"):
        eval_transform(Preprocess(224, 0.875, "lanczos", (0.5,) * 3, (0.5,) * 3))


def test_eval_transform_does_not_import_torchvision():
    code = ("import sys; from PIL import Image; from vistrain.backbones import get_backbone; "
            "from vistrain.features.transforms import eval_transform; "
            "eval_transform(get_backbone('efficientnet_lite0').preprocess)(Image.new('RGB', (300, 200))); "
            "print('torchvision' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
