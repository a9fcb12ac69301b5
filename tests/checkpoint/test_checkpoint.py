"""ImageNet backbone weights: torchvision and detectron2 (.pkl) layouts into our ResNet, the
layout checks against the model's input, one-line errors for files that do not fit; the Swin
repository's .pth and MaskDINO's .pkl into our Swin."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

from dimaskdino.checkpoint import (
    CheckpointError,
    load_backbone_weights,
    load_swin_weights,
    read_backbone_weights,
)
from dimaskdino.config import ModelConfig
from dimaskdino.modeling.backbone import ResNet, ResNetConfig, SwinConfig, SwinTransformer


def randomized_torchvision_resnet50() -> torchvision.models.ResNet:
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def torchvision_features(model: torchvision.models.ResNet, x: torch.Tensor) -> dict:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    out = {}
    for index, layer in enumerate((model.layer1, model.layer2, model.layer3, model.layer4)):
        x = layer(x)
        out[f"res{index + 2}"] = x
    return out


def test_torchvision_weights_reproduce_torchvision_features(tmp_path):
    reference = randomized_torchvision_resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = ResNet(ResNetConfig()).double().eval()
    load_backbone_weights(model, path)
    x = torch.randn(2, 3, 96, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(x), torchvision_features(reference, x)
    for stage in want:
        torch.testing.assert_close(got[stage], want[stage], rtol=0, atol=1e-10, msg=stage)


def test_detectron2_named_pkl_loads_exactly(tmp_path):
    source = ResNet(ResNetConfig(stem_out_channels=8, res2_out_channels=16, width_per_group=4))
    blobs = {k: v.numpy() for k, v in source.state_dict().items()}
    blobs["linear.weight"] = torch.zeros(3, 3).numpy()  # a classifier is ignored
    path = tmp_path / "r50.pkl"
    path.write_bytes(pickle.dumps({"model": blobs, "__author__": "test"}))
    target = ResNet(ResNetConfig(stem_out_channels=8, res2_out_channels=16, width_per_group=4))
    load_backbone_weights(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def caffe2_blobs(model: ResNet) -> dict:
    """MSRA Caffe2 names for every conv weight and BN scale/bias of ``model``."""
    names = {"shortcut": "branch1", "conv1": "branch2a", "conv2": "branch2b",
             "conv3": "branch2c"}
    blobs = {"fc1000_w": torch.zeros(10, 4).numpy()}
    for key, value in model.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            continue
        parts = key.split(".")
        if parts[0] == "stem":
            base = "conv1" if parts[2] == "weight" else "res_conv1"
        else:
            base = f"{parts[0]}_{parts[1]}_{names[parts[2]]}"
        suffix = {"weight": "_w"}[parts[-1]] if parts[-2] != "norm" else \
            {"weight": "_bn_s", "bias": "_bn_b"}[parts[-1]]
        blobs[base + suffix] = value.numpy()
    return blobs


def test_caffe2_pkl_maps_every_blob(tmp_path):
    config = ResNetConfig(stem_out_channels=8, res2_out_channels=16, width_per_group=4,
                          stride_in_1x1=True)
    source = ResNet(config)
    with torch.no_grad():
        for name, buffer in source.named_buffers():
            if name.endswith(("weight", "bias")):
                buffer.normal_()
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": caffe2_blobs(source)}))
    target = ResNet(config)
    load_backbone_weights(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_errors_are_one_clear_line(tmp_path):
    model = ResNet(ResNetConfig(res2_out_channels=128))
    with pytest.raises(CheckpointError, match="not found"):
        load_backbone_weights(model, tmp_path / "missing.pth")
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"res2.0.conv3.weight has shape \(256, 64, 1, 1\)"):
        load_backbone_weights(model, path)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"blobs": {"res2_0_branch9_w": torch.zeros(1).numpy()}}))
    with pytest.raises(CheckpointError, match="unrecognised Caffe2 ResNet blob"):
        read_backbone_weights(bad)


SWIN = SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4,
                  drop_path_rate=0.0)


def swin_repo_state(model: SwinTransformer) -> dict:
    """``model``'s weights as the Swin repository's ImageNet classifier saves them: no
    detection norms norm0..3, a final ``norm`` and ``head``, ``attn_mask`` buffers in the
    shifted blocks."""
    state = {k: v.clone() for k, v in model.state_dict().items()
             if not k.startswith(("norm0", "norm1", "norm2", "norm3"))}
    state["norm.weight"], state["norm.bias"] = torch.ones(128), torch.zeros(128)
    state["head.weight"], state["head.bias"] = torch.randn(10, 128), torch.zeros(10)
    for stage in range(4):
        state[f"layers.{stage}.blocks.1.attn_mask"] = torch.zeros(4, 16, 16)
    return state


def assert_swin_loaded(target: SwinTransformer, source: SwinTransformer) -> None:
    fresh = SwinTransformer(SWIN).state_dict()
    for key, value in source.state_dict().items():
        if key.startswith(("norm0", "norm1", "norm2", "norm3")):
            assert torch.equal(target.state_dict()[key], fresh[key]), key  # initialisation
        else:
            assert torch.equal(target.state_dict()[key], value), key


@pytest.mark.parametrize("layout", ["pth", "pkl", "pkl-numpy-prefixed"])
def test_imagenet_swin_weights_load_from_every_layout(layout, tmp_path):
    torch.manual_seed(1)
    source = SwinTransformer(SWIN)
    state = swin_repo_state(source)
    if layout == "pth":
        path = tmp_path / "swin.pth"
        torch.save({"model": state, "optimizer": {}, "epoch": 90}, path)
    else:  # MaskDINO's converter: {"model": the same dict, ...} pickled
        if layout == "pkl-numpy-prefixed":
            state = {f"backbone.{k}": v.numpy() for k, v in state.items()}
        path = tmp_path / "swin.pkl"
        path.write_bytes(pickle.dumps({"model": state, "__author__": "third_party",
                                       "matching_heuristics": True}))
    target = SwinTransformer(SWIN)
    load_swin_weights(target, path)
    assert_swin_loaded(target, source)


def test_swin_weights_that_do_not_fit_are_one_clear_line(tmp_path):
    source = SwinTransformer(SwinConfig(embed_dim=16, depths=(2, 2, 2, 2),
                                        num_heads=(1, 2, 2, 4), window_size=7))
    path = tmp_path / "window7.pth"
    torch.save({"model": swin_repo_state(source)}, path)
    with pytest.raises(CheckpointError, match=r"relative_position_bias_table has shape "
                                              r"\(169, 1\), the model expects \(49, 1\)"):
        load_swin_weights(SwinTransformer(SWIN), path)
    partial = swin_repo_state(SwinTransformer(SWIN))
    del partial["layers.2.blocks.0.mlp.fc1.weight"]
    torch.save({"model": partial}, path)
    with pytest.raises(CheckpointError, match=r"does not fit the Swin backbone: 1 missing keys "
                                              r"\(e.g. \['layers.2.blocks.0.mlp.fc1.weight'\]\)"):
        load_swin_weights(SwinTransformer(SWIN), path)
    shuffled = swin_repo_state(SwinTransformer(SWIN))
    shuffled["layers.1.blocks.1.attn.relative_position_index"] = \
        shuffled["layers.1.blocks.1.attn.relative_position_index"].flip(0)
    torch.save({"model": shuffled}, path)
    with pytest.raises(CheckpointError, match="relative_position_index differs"):
        load_swin_weights(SwinTransformer(SWIN), path)
    with pytest.raises(CheckpointError, match="not found"):
        load_swin_weights(SwinTransformer(SWIN), tmp_path / "missing.pkl")


NARROW = {"stem_out_channels": 8, "res2_out_channels": 16, "width_per_group": 4}


def test_caffe2_weights_in_an_rgb_model_compute_the_caffe2_features(tmp_path):
    """MSRA weights read BGR pixels minus the mean; loaded for the model's RGB input and
    torchvision normalisation, the backbone computes the same features."""
    caffe2 = ResNetConfig(**NARROW, stride_in_1x1=True)
    source = ResNet(caffe2).double().eval()
    with torch.no_grad():
        for name, buffer in source.named_buffers():
            if name.endswith("weight"):
                buffer.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                buffer.normal_()
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": caffe2_blobs(source)}))
    model = ModelConfig(backbone=caffe2)
    target = ResNet(caffe2).double().eval()
    assert load_backbone_weights(target, path, model) == "Caffe2"
    rgb = torch.rand(2, 3, 64, 48, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(0)) * 255
    mean_bgr = torch.tensor([103.53, 116.28, 123.675], dtype=torch.float64).view(1, 3, 1, 1)
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1)
                 for v in (model.pixel_mean, model.pixel_std))
    with torch.no_grad():
        want = source(rgb.flip(1) - mean_bgr)
        got = target((rgb - mean) / std)
    for stage in want:
        torch.testing.assert_close(got[stage], want[stage], rtol=1e-9, atol=1e-9, msg=stage)


@pytest.mark.parametrize(("model", "fix"), [
    (ModelConfig(backbone=ResNetConfig(**NARROW, stride_in_1x1=True)),
     "set model.backbone.stride_in_1x1=false"),
    (ModelConfig(backbone=ResNetConfig(**NARROW), pixel_mean=(103.53, 116.28, 123.675),
                 pixel_std=(1.0, 1.0, 1.0), input_format="BGR"),
     "set model.input_format=RGB model.pixel_mean=[123.675, 116.28, 103.53] "
     "model.pixel_std=[58.395, 57.12, 57.375]"),
])
def test_torchvision_layout_checks_the_models_input_and_stride(tmp_path, model, fix):
    path = tmp_path / "r50.pkl"
    blobs = {k: v.numpy() for k, v in ResNet(ResNetConfig(**NARROW)).state_dict().items()}
    path.write_bytes(pickle.dumps({"model": blobs, "__author__": "torchvision"}))
    with pytest.raises(CheckpointError, match="is in the torchvision layout") as error:
        load_backbone_weights(ResNet(model.backbone), path, model)
    assert str(error.value).endswith(fix)


def test_caffe2_layout_needs_the_stride_in_the_1x1(tmp_path):
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": caffe2_blobs(ResNet(ResNetConfig(**NARROW)))}))
    model = ModelConfig(backbone=ResNetConfig(**NARROW))
    with pytest.raises(CheckpointError, match=r"Caffe2 layout .* set "
                                              r"model.backbone.stride_in_1x1=true$"):
        load_backbone_weights(ResNet(model.backbone), path, model)


def test_files_that_are_no_resnet_weights_are_one_clear_line(tmp_path):
    model = ResNet(ResNetConfig())
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18)
    with pytest.raises(CheckpointError, match="holds ResNet-18 weights; the model's backbone "
                                              r"is ResNet-50 \(model.backbone.depth=50\)"):
        load_backbone_weights(model, resnet18)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(resnet18.read_bytes()[:100_000])
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    for path in (truncated, text):
        with pytest.raises(CheckpointError, match="is not a complete PyTorch checkpoint"):
            load_backbone_weights(model, path)
    pkl = tmp_path / "notes.pkl"
    pkl.write_text("not weights\n")
    with pytest.raises(CheckpointError, match="is not a pickle file"):
        load_backbone_weights(model, pkl)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(pickle.dumps({"model": {"stem.conv1.weight": torch.zeros(9).numpy()}})[:60])
    with pytest.raises(CheckpointError, match=r"cannot unpickle .*truncated"):
        load_backbone_weights(model, cut)
    whole = tmp_path / "model.pth"
    torch.save({"format": "dimask-checkpoint-1", "model": {}, "iteration": 0}, whole)
    with pytest.raises(CheckpointError, match=r"holds no ResNet state dict .*model.weights"):
        load_backbone_weights(model, whole)
