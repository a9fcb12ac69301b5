"""The Swin backbone against the official D2SwinTransformer's outputs and hand-made cases."""

from __future__ import annotations

import pytest
import torch
import yaml

from dimaskdino.modeling.backbone import SwinConfig, SwinTransformer
from dimaskdino.modeling.backbone.swin import relative_position_index, shift_mask
from dimaskdino.modeling.preprocess import batch_images

TINY = SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4,
                  drop_path_rate=0.0)


def test_backbone_reproduces_official_features(golden_fixtures):
    """Window 7 on stage maps of 32, 16, 8, 4 tokens: every stage pads, the shifted blocks
    wrap padding into their windows."""
    folder = golden_fixtures / "maskdino_swin_tiny"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    model = SwinTransformer(SwinConfig.from_official(config["MODEL"])).double().eval()
    state = torch.load(folder / "state_dict.pt", weights_only=True)
    model.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items()
                           if k.startswith("backbone.")}, strict=True)
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    outputs = torch.load(folder / "outputs.pt", weights_only=True)
    batch, _ = batch_images(inputs["images"], inputs["pixel_mean"], inputs["pixel_std"],
                            inputs["size_divisibility"])
    with torch.no_grad():
        features = model(batch)
    assert list(features) == ["res2", "res3", "res4", "res5"]
    for stage, got in features.items():
        torch.testing.assert_close(got, outputs["backbone"][stage], rtol=0, atol=1e-9,
                                   msg=stage)
    # the official buffers are the window's offset table
    for key, value in state.items():
        if key.endswith("relative_position_index"):
            assert torch.equal(value, relative_position_index(7)), key


def test_relative_position_index_by_hand():
    index = relative_position_index(2)
    # tokens (0,0) (0,1) (1,0) (1,1); offsets (dy + 1) * 3 + dx + 1
    assert index.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


def test_shift_mask_regions_by_hand():
    # 4 x 4 grid, window 2, shift 1: region bands are rows/cols [0, 2), [2, 3), [3, 4)
    mask = shift_mask(4, 4, 2, 1, torch.float32, torch.device("cpu"))
    assert mask.shape == (4, 4, 4)
    assert not mask[0].any()                       # top-left window: one region
    top_right = torch.tensor([[0, -100, 0, -100], [-100, 0, -100, 0],
                              [0, -100, 0, -100], [-100, 0, -100, 0]], dtype=torch.float32)
    assert torch.equal(mask[1], top_right)         # columns 2 and 3 differ
    assert (mask[3] != 0).sum() == 12              # four regions: only the diagonal is 0


def test_shapes_for_sizes_that_are_not_window_multiples_and_gradients():
    model = SwinTransformer(TINY)
    images = torch.randn(2, 3, 96, 160)
    out = model(images)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (2, 16, 24, 40), "res3": (2, 32, 12, 20), "res4": (2, 64, 6, 10),
        "res5": (2, 128, 3, 5)}
    out["res5"].sum().backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.layers[0].blocks[0].attn.relative_position_bias_table.grad.abs().sum() > 0


def test_out_features_and_absolute_position_embedding():
    config = SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                        window_size=4, ape=True, pretrain_img_size=64,
                        out_features=("res3", "res4"))
    model = SwinTransformer(config).eval()
    assert model.absolute_pos_embed.shape == (1, 16, 16, 16)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert list(out) == ["res3", "res4"]
    assert config.output_shapes() == ({"res3": 32, "res4": 64}, {"res3": 8, "res4": 16})
    # every official norm exists whatever is returned (the official keys)
    assert {f"norm{i}.weight" for i in range(4)} <= set(model.state_dict())


def test_official_options_are_read_and_unknown_ones_named():
    model = {"SWIN": {"EMBED_DIM": 192, "DEPTHS": [2, 2, 18, 2], "NUM_HEADS": [6, 12, 24, 48],
                      "WINDOW_SIZE": 12, "QK_SCALE": None, "USE_CHECKPOINT": True,
                      "PRETRAIN_IMG_SIZE": 384, "MLP_RATIO": 4.0}}
    config = SwinConfig.from_official(model)
    assert (config.embed_dim, config.depths, config.window_size) == (192, (2, 2, 18, 2), 12)
    assert config.use_checkpoint and config.drop_path_rate == 0.3  # the official default
    with pytest.raises(ValueError, match=r"MODEL\.SWIN\.FOO"):
        SwinConfig.from_official({"SWIN": {"FOO": 1}})
    with pytest.raises(ValueError, match=r"num_heads=\[5, 6, 12, 24\]: must be divisors"):
        SwinConfig(num_heads=(5, 6, 12, 24))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = SwinTransformer(TINY).double()
    checked = SwinTransformer(SwinConfig(**{**TINY.__dict__, "use_checkpoint": True})).double()
    checked.load_state_dict(plain.state_dict())
    images = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    for model in (plain, checked):
        model(images)["res5"].square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checked.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-10, msg=name)
