"""The MaskDINO encoder against the official implementation's encoder outputs."""

from __future__ import annotations

import pytest
import torch
import yaml

from dimaskdino.modeling.encoder import EncoderConfig, MaskDINOEncoder
from dimaskdino.modeling.position import sine_position_embedding

FIXTURES = ("dimaskdino_tiny", "maskdino_tiny", "maskdino_r50_3s_tiny")
PREFIX = "sem_seg_head.pixel_decoder."
TOLERANCE = 1e-9


def official_encoder(folder) -> MaskDINOEncoder:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    outputs = torch.load(folder / "outputs.pt", weights_only=True)
    backbone = outputs["backbone"]
    channels = {name: f.shape[1] for name, f in backbone.items()}
    strides = {name: 4 * 2 ** i for i, name in enumerate(backbone)}
    encoder = MaskDINOEncoder(EncoderConfig.from_official(config["MODEL"], channels, strides))
    encoder = encoder.double()  # before loading: float64 weights must not round to float32
    state = torch.load(folder / "state_dict.pt", weights_only=True)
    encoder.load_state_dict({k.removeprefix(PREFIX): v for k, v in state.items()
                             if k.startswith(PREFIX)}, strict=True)
    return encoder.eval()


@pytest.mark.parametrize("name", FIXTURES)
def test_encoder_reproduces_official_outputs(name, golden_fixtures):
    folder = golden_fixtures / name
    encoder = official_encoder(folder)
    outputs = torch.load(folder / "outputs.pt", weights_only=True)
    with torch.no_grad():
        got = encoder(outputs["backbone"])
    want = outputs["encoder"]
    assert torch.equal(got["spatial_shapes"], want["spatial_shapes"])
    assert torch.equal(got["level_start_index"], want["level_start_index"])
    torch.testing.assert_close(got["memory"], outputs["encoder_memory"], rtol=0, atol=TOLERANCE)
    for level, (g, w) in enumerate(zip(got["multi_scale_features"],
                                       want["multi_scale_features"], strict=True)):
        torch.testing.assert_close(g, w, rtol=0, atol=TOLERANCE, msg=f"level {level}")
    torch.testing.assert_close(got["mask_features"], want["mask_features"], rtol=0,
                               atol=TOLERANCE)


def test_sine_embedding_definition():
    pos = sine_position_embedding(1, 3, 5, 8, dtype=torch.float64)
    assert pos.shape == (1, 8, 3, 5)
    # channel 1 of the y half: cos of the row angle at the lowest frequency
    row = 2  # third row: (2 + 1) / (3 + 1e-6) * 2 pi
    angle = 3 / (3 + 1e-6) * 2 * torch.pi
    assert torch.isclose(pos[0, 1, row, 0], torch.tensor(angle, dtype=torch.float64).cos())
    # channel 4 + 2 of the x half: sin at frequency 10000 ** (2 / 4)
    angle = 4 / (5 + 1e-6) * 2 * torch.pi / 100
    assert torch.isclose(pos[0, 6, 0, 3], torch.tensor(angle, dtype=torch.float64).sin())


def test_shapes_and_gradients_of_a_fresh_encoder():
    config = EncoderConfig(in_channels={"res2": 16, "res3": 32, "res4": 64, "res5": 128},
                           in_strides={"res2": 4, "res3": 8, "res4": 16, "res5": 32},
                           conv_dim=32, mask_dim=16, layers=1, heads=4, dim_feedforward=64)
    encoder = MaskDINOEncoder(config)
    # a 128 x 192 image: res2..res5 at strides 4..32
    features = {name: torch.randn(2, c, 128 // s, 192 // s)
                for (name, c), s in zip(config.in_channels.items(), (4, 8, 16, 32))}
    out = encoder(features)
    assert [tuple(m.shape) for m in out["multi_scale_features"]] == [
        (2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6), (2, 32, 2, 3)]
    assert out["mask_features"].shape == (2, 16, 32, 48)
    assert out["memory"].shape == (2, 384 + 96 + 24 + 6, 32)
    out["mask_features"].sum().backward()
    assert encoder.input_proj[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("order", "strides"), [("low2high", [8, 16, 32, 128, 64]),
                                                ("high2low", [128, 64, 32, 16, 8])])
def test_feature_order_sets_the_level_order(order, strides):
    """The official level orders with two extra levels (the module docstring's table)."""
    config = EncoderConfig(in_channels={"res2": 8, "res3": 16, "res4": 32, "res5": 64},
                           in_strides={"res2": 4, "res3": 8, "res4": 16, "res5": 32},
                           conv_dim=32, mask_dim=16, layers=1, heads=4, dim_feedforward=64,
                           total_levels=5, feature_order=order)
    encoder = MaskDINOEncoder(config)
    features = {name: torch.randn(1, c, 256 // s, 256 // s)
                for (name, c), s in zip(config.in_channels.items(), (4, 8, 16, 32))}
    with torch.no_grad():
        out = encoder(features)
    assert out["spatial_shapes"][:, 0].tolist() == [256 // s for s in strides]
    # input_proj.0 projects the finest backbone level with low2high, the coarsest otherwise
    assert encoder.input_proj[0][0].in_channels == (16 if order == "low2high" else 64)
    assert encoder.input_proj[3][0].in_channels == 64  # the first extra level, from res5
    with pytest.raises(ValueError, match="feature_order='sideways': must be one of"):
        EncoderConfig(in_channels={}, in_strides={}, feature_order="sideways")
