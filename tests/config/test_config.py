"""Official YAML configs: _BASE_ chains, defaults, errors."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dimaskdino.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_official_config,
    preset,
)
from dimaskdino.modeling.backbone import SwinConfig


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
    (tmp_path / "fpn.yaml").write_text("MODEL:\n  BACKBONE:\n    NAME: build_resnet_fpn\n")
    with pytest.raises(ConfigError, match=r"MODEL\.BACKBONE\.NAME 'build_resnet_fpn' is not "
                                          "supported"):
        ModelConfig.from_official(load_official_config(tmp_path / "fpn.yaml"))


def test_experiment_config_round_trips_through_plain_dicts():
    from dimaskdino.config import ExperimentConfig, config_from_dict, config_to_dict, preset

    for name in ("tiny", "r50-coco-12ep", "r50-bdd100k-68ep"):
        for model in ("dimaskdino", "maskdino"):
            config = preset(name, model)
            assert config_from_dict(ExperimentConfig, config_to_dict(config)) == config


def test_presets_follow_the_paper():
    from dimaskdino.config import preset

    coco = preset("r50-coco-12ep")
    assert (coco.solver.batch_size, coco.solver.lr, coco.solver.max_iter) == (16, 1e-4, 88500)
    assert coco.solver.steps == (81125,) and coco.data.image_size == (1024, 1024)
    assert coco.model.predictor.first_selected_queries == 600
    assert coco.model.predictor.num_guiding_tokens == 50
    assert preset("r50-coco-12ep", "maskdino").model.name == "MaskDINO"
    assert preset("r50-coco-50ep").solver.steps == (327778, 355092)
    bdd = preset("r50-bdd100k-68ep")
    assert bdd.solver.batch_size == 8 and bdd.model.predictor.num_classes == 8
    # 7000 images / batch 8 = 875 iterations per epoch
    assert (bdd.solver.max_iter, bdd.solver.steps) == (68 * 875, (50 * 875,))
    assert bdd.data.dataset.startswith("bdd100k:")


def test_overrides_are_typed_and_checked():
    from dimaskdino.config import apply_overrides, preset

    config = apply_overrides(preset("tiny"), [
        "solver.max_iter=7", "solver.steps=[5]", "solver.lr=1e-3", "data.image_size=[64, 96]",
        "model.predictor.first_selected_queries=null", "model.predictor.num_guiding_tokens=null",
        "model.backbone.res2_out_channels=64"])
    assert config.solver.max_iter == 7 and config.solver.lr == 1e-3
    assert config.data.image_size == (64, 96) and config.model.name == "MaskDINO"
    # the encoder's inputs follow the backbone
    assert config.model.encoder.in_channels["res5"] == 512
    for bad, message in [("solver.max_itr=3", "unknown config key 'solver.max_itr'"),
                         ("solver.max_iter=many", "solver.max_iter: expected int"),
                         ("solver.max_iter=2.5", "expected int"),
                         ("data.image_size=[64]", "expected 2 values"),
                         ("solver", "key=value"),
                         ("model.backbone.depth=26", "model.backbone.depth=26: must be one "
                                                     "of 18, 34")]:
        with pytest.raises(ConfigError, match=message):
            apply_overrides(preset("tiny"), [bad])
    with pytest.raises(ConfigError, match="unknown preset 'huge'; choose one of tiny"):
        preset("huge")
    with pytest.raises(ConfigError, match="unknown model"):
        preset("tiny", "maskrcnn")


@pytest.mark.parametrize("model", ["dimaskdino", "maskdino"])
@pytest.mark.parametrize("name", ["swinl-coco-12ep", "swinl-coco-50ep"])
def test_swin_large_presets(name, model):
    config = preset(name, model)
    r50 = preset(name.replace("swinl", "r50"), model)
    backbone = config.model.backbone
    assert isinstance(backbone, SwinConfig)
    assert (backbone.embed_dim, backbone.depths, backbone.window_size) == (192, (2, 2, 18, 2),
                                                                           12)
    assert config.model.encoder.transformer_in_features == ("res2", "res3", "res4", "res5")
    assert config.model.encoder.total_levels == config.model.predictor.levels == 5
    assert config.model.encoder.in_channels == {"res2": 192, "res3": 384, "res4": 768,
                                                "res5": 1536}
    assert config.model.name == r50.model.name and config.solver == r50.solver
    # the backbone type survives the plain-dict round trip; overrides reach its fields
    assert config_from_dict(ExperimentConfig, config_to_dict(config)) == config
    changed = apply_overrides(config, ["model.backbone.window_size=7"])
    assert changed.model.backbone.window_size == 7
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.backbone\.depth'"):
        apply_overrides(config, ["model.backbone.depth=50"])


def _leaves(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _like(value):
    """A hypothesis strategy of values of ``value``'s type (a config leaf)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-5, 10**6)
    if isinstance(value, float):
        return st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([1e-4, 2.5e-10, 0.0])
    if isinstance(value, str):
        return st.text(max_size=12)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return st.lists(st.integers(1, 10**5), min_size=len(value), max_size=len(value))
    return st.just(value)


LEAVES = dict(_leaves(config_to_dict(preset("tiny"))))


@pytest.mark.slow
@given(st.data())
@settings(max_examples=40, deadline=None, derandomize=True)
def test_random_configs_round_trip_through_yaml_and_overrides(data):
    keys = data.draw(st.lists(st.sampled_from(sorted(LEAVES)), min_size=1, max_size=5,
                              unique=True))
    changes = {key: data.draw(_like(LEAVES[key])) for key in keys}
    overrides = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
                 .removesuffix("\n...") for key, value in changes.items()]
    try:
        config = apply_overrides(preset("tiny"), overrides)
    except ConfigError as exc:  # a value the config refuses, named in one line
        assert "\n" not in str(exc)
        return
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    assert config_from_dict(ExperimentConfig, yaml.safe_load(text)) == config
    dotted = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
              .removesuffix("\n...") for k, v in _leaves(config_to_dict(config))]
    assert apply_overrides(preset("tiny"), dotted) == config
