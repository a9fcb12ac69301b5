"""The detectron2-layout ResNet against the official implementation's backbone outputs."""

from __future__ import annotations

import pytest
import torch
import yaml

from dimaskdino.modeling.backbone import ResNet, ResNetConfig
from dimaskdino.modeling.preprocess import batch_images

FIXTURES = ("dimaskdino_tiny", "maskdino_tiny", "maskdino_r50_3s_tiny")


def official_backbone(folder) -> tuple[ResNet, dict]:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    model = ResNet(ResNetConfig.from_official(config["MODEL"])).double().eval()
    state = torch.load(folder / "state_dict.pt", weights_only=True)
    backbone = {k.removeprefix("backbone."): v for k, v in state.items()
                if k.startswith("backbone.")}
    model.load_state_dict(backbone, strict=True)
    return model, config


@pytest.mark.parametrize("name", FIXTURES)
def test_backbone_reproduces_official_features(name, golden_fixtures):
    folder = golden_fixtures / name
    model, config = official_backbone(folder)
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    outputs = torch.load(folder / "outputs.pt", weights_only=True)
    batch, sizes = batch_images(inputs["images"], inputs["pixel_mean"], inputs["pixel_std"],
                                inputs["size_divisibility"])
    assert sizes == [tuple(img.shape[-2:]) for img in inputs["images"]]
    with torch.no_grad():
        features = model(batch)
    assert list(features) == list(config["MODEL"]["RESNETS"]["OUT_FEATURES"])
    for stage, got in features.items():
        torch.testing.assert_close(got, outputs["backbone"][stage], rtol=0, atol=1e-9,
                                   msg=stage)


def test_full_size_config_matches_official_key_shapes(golden_fixtures):
    config = yaml.safe_load((golden_fixtures / "config_dimaskdino_r50_full.yaml").read_text())
    model = ResNet(ResNetConfig.from_official(config["MODEL"]))
    want = {}
    for line in (golden_fixtures / "keys_dimaskdino_r50_full.txt").read_text().splitlines():
        key, shape, *_ = line.split("\t")
        if key.startswith("backbone."):
            dims = shape.strip("()").split(",")
            want[key.removeprefix("backbone.")] = tuple(int(x) for x in dims if x.strip())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == want


def test_strides_channels_and_freezing():
    config = ResNetConfig(stem_out_channels=8, res2_out_channels=16, width_per_group=4,
                          freeze_at=2)
    model = ResNet(config)
    features = model(torch.zeros(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "res2": (1, 16, 16, 24), "res3": (1, 32, 8, 12), "res4": (1, 64, 4, 6),
        "res5": (1, 128, 2, 3)}
    assert model.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "res2"}
    assert all(p.requires_grad for p in model.res3.parameters())


def test_unsupported_configs_are_clear():
    with pytest.raises(ValueError, match="depth=26: must be one of 18, 34, 50"):
        ResNetConfig(depth=26)
    with pytest.raises(ValueError, match="norm='SyncBN': must be one of 'FrozenBN', 'GN'"):
        ResNetConfig(norm="SyncBN")
    with pytest.raises(ValueError, match="deformable"):
        ResNetConfig.from_official({"RESNETS": {"DEFORM_ON_PER_STAGE": [False, True]}})


def test_basic_block_resnet_with_group_norm():
    """ResNet-18/34 use two 3x3 convolutions per block; GN makes every norm trainable."""
    config = ResNetConfig(depth=18, res2_out_channels=32, stem_out_channels=32, norm="GN")
    model = ResNet(config)
    out = model(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 32, 16, 24), "res3": (1, 64, 8, 12), "res4": (1, 128, 4, 6),
        "res5": (1, 256, 2, 3)}
    assert len(model.res2) == 2 and not hasattr(model.res2[0], "conv3")
    assert isinstance(model.res3[0].conv1.norm, torch.nn.GroupNorm)
    assert config.output_shapes()[0] == {"res2": 32, "res3": 64, "res4": 128, "res5": 256}
    out["res5"].sum().backward()
    assert model.stem.conv1.norm.weight.grad is not None
