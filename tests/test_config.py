"""Official YAML configs: _BASE_ chains, defaults, errors."""

from __future__ import annotations

import pytest

from dimaskdino.config import ConfigError, ModelConfig, load_official_config


def test_base_chain_merges_relative_files_over_defaults(tmp_path):
    (tmp_path / "bases").mkdir()
    (tmp_path / "bases" / "Base.yaml").write_text(
        "MODEL:\n  SEM_SEG_HEAD:\n    NUM_CLASSES: 80\n    CONVS_DIM: 256\n"
        "    IN_FEATURES: [res2, res3, res4, res5]\n    FEATURE_ORDER: low2high\n"
        "    TRANSFORMER_ENC_LAYERS: 6\n"
        "  MaskDINO:\n    TRANSFORMER_DECODER_NAME: DIMaskDINODecoder\n"
        "    NUM_OBJECT_QUERIES: 300\n    INITIALIZE_BOX_TYPE: mask2box\n")
    (tmp_path / "model.yaml").write_text(
        "_BASE_: bases/Base.yaml\nMODEL:\n  PIXEL_MEAN: [123.675, 116.280, 103.530]\n"
        "  PIXEL_STD: [58.395, 57.120, 57.375]\n"
        "  RESNETS:\n    STRIDE_IN_1X1: false\n    OUT_FEATURES: [res2, res3, res4, res5]\n"
        "  SEM_SEG_HEAD:\n    NUM_CLASSES: 8\nINPUT:\n  FORMAT: RGB\n")
    cfg = load_official_config(tmp_path / "model.yaml")
    assert cfg["MODEL"]["SEM_SEG_HEAD"]["NUM_CLASSES"] == 8       # file over base
    assert cfg["MODEL"]["SEM_SEG_HEAD"]["CONVS_DIM"] == 256       # base over default
    assert cfg["MODEL"]["MaskDINO"]["DEC_LAYERS"] == 6            # default
    config = ModelConfig.from_official(cfg)
    assert config.name == "DI-MaskDINO"
    assert config.predictor.num_queries == 300
    assert config.predictor.first_selected_queries == 600
    assert config.predictor.num_guiding_tokens == 50
    assert config.backbone.stride_in_1x1 is False
    assert config.encoder.in_channels == {"res2": 256, "res3": 512, "res4": 1024,
                                          "res5": 2048}


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match="config not found"):
        load_official_config(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_official_config(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("MODEL: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_official_config(tmp_path / "bad.yaml")
    (tmp_path / "swin.yaml").write_text("MODEL:\n  BACKBONE:\n    NAME: D2SwinTransformer\n")
    with pytest.raises(ConfigError, match="not a ResNet"):
        ModelConfig.from_official(load_official_config(tmp_path / "swin.yaml"))
