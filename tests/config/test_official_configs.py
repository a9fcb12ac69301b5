"""Every official COCO instance-segmentation config builds through ``load_official``.

The configs are kept here as the option values their model reads (written for this test from
IDEA-Research/MaskDINO ``configs/coco/instance-segmentation/`` and CQU-ADHRI-Lab/DI-MaskDINO
``configs/``), laid out as the repositories do: a base file and variants naming it in
``_BASE_`` (the Swin ones from a subfolder).
"""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from dimaskdino.checkpoint import load_official
from dimaskdino.config import ConfigError, ModelConfig, load_official_config
from dimaskdino.modeling.backbone import ResNetConfig, SwinConfig

STAGES = ["res2", "res3", "res4", "res5"]
# the shared base of both repositories' COCO configs: an R50 with RGB input
BASE = {"MODEL": {
    "BACKBONE": {"FREEZE_AT": 0, "NAME": "build_resnet_backbone"},
    "PIXEL_MEAN": [123.675, 116.280, 103.530], "PIXEL_STD": [58.395, 57.120, 57.375],
    "RESNETS": {"DEPTH": 50, "STEM_OUT_CHANNELS": 64, "STRIDE_IN_1X1": False,
                "OUT_FEATURES": STAGES}},
    "INPUT": {"FORMAT": "RGB"}}
# what every instance config sets alike
HEAD = {
    "SEM_SEG_HEAD": {"NUM_CLASSES": 80, "CONVS_DIM": 256, "MASK_DIM": 256, "NORM": "GN",
                     "PIXEL_DECODER_NAME": "MaskDINOEncoder", "NUM_FEATURE_LEVELS": 3,
                     "IN_FEATURES": STAGES, "COMMON_STRIDE": 4, "TRANSFORMER_ENC_LAYERS": 6},
    "MaskDINO": {"TRANSFORMER_DECODER_NAME": "MaskDINODecoder", "HIDDEN_DIM": 256,
                 "NUM_OBJECT_QUERIES": 300, "NHEADS": 8, "DROPOUT": 0.0,
                 "DIM_FEEDFORWARD": 2048, "ENFORCE_INPUT_PROJ": False, "SIZE_DIVISIBILITY": 32,
                 "DEC_LAYERS": 9, "INITIAL_PRED": True, "TWO_STAGE": True, "DN": "seg",
                 "DN_NUM": 100},
}
SWIN_L = {"BACKBONE": {"NAME": "D2SwinTransformer"},
          "SWIN": {"EMBED_DIM": 192, "DEPTHS": [2, 2, 18, 2], "NUM_HEADS": [6, 12, 24, 48],
                   "WINDOW_SIZE": 12, "APE": False, "DROP_PATH_RATE": 0.3, "PATCH_NORM": True,
                   "PRETRAIN_IMG_SIZE": 384}}


def variant(ffn: int, levels: int, encoder_in: list[str], box: str, order: str | None,
            extra: dict | None = None) -> dict:
    """A config's MODEL section over HEAD: encoder FFN width, level count, encoder inputs,
    box init and FEATURE_ORDER (None: unset, the repo default high2low)."""
    model = copy.deepcopy(HEAD)
    head = model["SEM_SEG_HEAD"]
    head.update(DIM_FEEDFORWARD=ffn, TOTAL_NUM_FEATURE_LEVELS=levels,
                DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES=encoder_in)
    if order is not None:
        head["FEATURE_ORDER"] = order
    model["MaskDINO"]["INITIALIZE_BOX_TYPE"] = box
    for key, value in (extra or {}).items():
        model.setdefault(key, {}).update(value)
    return model


R3 = STAGES[1:]
DI = {"MaskDINO": {"TRANSFORMER_DECODER_NAME": "DIMaskDINODecoder",
                   "FIRST_SELECTED_QUERIES": 600, "NUM_GUIDING_TOKENS": 50, "DEC_LAYERS": 6,
                   "TI_LAYERS": 2}}
# file name -> (MODEL section, expected: backbone, feature order, levels, box init, DI)
CONFIGS = {
    "maskdino_R50_bs16_50ep_3s.yaml": (
        variant(1024, 3, R3, "bitmask", None), ("resnet", "high2low", 3, "bitmask", False)),
    "maskdino_R50_bs16_50ep_3s_dowsample1_2048.yaml": (
        variant(2048, 4, R3, "mask2box", "low2high"),
        ("resnet", "low2high", 4, "mask2box", False)),
    "maskdino_R50_bs16_50ep_3s_dowsample1_2048_bitmask.yaml": (
        variant(2048, 4, R3, "bitmask", "low2high"),
        ("resnet", "low2high", 4, "bitmask", False)),
    "maskdino_R50_bs16_50ep_3s_dowsample2.yaml": (
        variant(1024, 5, R3, "no", None), ("resnet", "high2low", 5, "no", False)),
    "maskdino_R50_bs16_50ep_4s_dowsample1_2048.yaml": (
        variant(2048, 4, STAGES, "no", "low2high"), ("resnet", "low2high", 4, "no", False)),
    "swin/maskdino_R50_bs16_50ep_4s_dowsample1_1024.yaml": (
        variant(1024, 5, STAGES, "bitmask", "low2high", SWIN_L),
        ("swin", "low2high", 5, "bitmask", False)),
    "swin/maskdino_R50_bs16_50ep_4s_dowsample1_2048.yaml": (
        variant(2048, 5, STAGES, "bitmask", "low2high", SWIN_L),
        ("swin", "low2high", 5, "bitmask", False)),
    "swin/maskdino_R50_bs16_50ep_4s_dowsample1_2048_no_maskEnhance.yaml": (
        variant(2048, 5, STAGES, "no", "low2high", SWIN_L),
        ("swin", "low2high", 5, "no", False)),
}
# DI-MaskDINO's three configs differ only in the schedule, which the model does not read
for _epochs in (12, 24, 50):
    CONFIGS[f"dimaskdino_r50_4scale_bs16_{_epochs}ep.yaml"] = (
        variant(2048, 4, R3, "mask2box", "low2high", DI),
        ("resnet", "low2high", 4, "mask2box", True))
# unique parameters the official code reports for some of them (the golden fixtures' READMEs)
PARAMETERS = {"maskdino_R50_bs16_50ep_3s.yaml": 43_816_436,
              "maskdino_R50_bs16_50ep_3s_dowsample1_2048.yaml": 52_058_004,
              "swin/maskdino_R50_bs16_50ep_4s_dowsample1_2048.yaml": 222_799_144,
              "dimaskdino_r50_4scale_bs16_12ep.yaml": 52_286_232}


def write_config(root, name: str, model: dict):
    """The base file at ``root`` and ``name`` over it (``_BASE_`` relative to the file)."""
    (root / "Base-COCO-InstanceSegmentation.yaml").write_text(yaml.safe_dump(BASE))
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    base = "../Base-COCO-InstanceSegmentation.yaml" if "/" in name else \
        "Base-COCO-InstanceSegmentation.yaml"
    path.write_text(yaml.safe_dump({"_BASE_": base, "MODEL": model}))
    return path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_official_instance_config_is_read(name, tmp_path):
    model, (backbone, order, levels, box, di) = CONFIGS[name]
    config = ModelConfig.from_official(load_official_config(write_config(tmp_path, name, model)))
    assert isinstance(config.backbone, SwinConfig if backbone == "swin" else ResNetConfig)
    assert config.encoder.feature_order == order
    assert config.encoder.total_levels == config.predictor.levels == levels
    assert config.predictor.initialize_box_type == box
    assert (config.name == "DI-MaskDINO") == di
    assert config.encoder.dim_feedforward == model["SEM_SEG_HEAD"]["DIM_FEEDFORWARD"]
    assert config.input_format == "RGB"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_official_instance_config_builds(name, tmp_path):
    model = load_official(write_config(tmp_path, name, CONFIGS[name][0]))
    assert not model.training
    if name in PARAMETERS:
        assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("MaskDINO", "TWO_STAGE", False, "MaskDINO.TWO_STAGE False is not supported"),
    ("MaskDINO", "INITIALIZE_BOX_TYPE", "grid",
     "model.predictor.initialize_box_type='grid': must be one of"),
    ("SEM_SEG_HEAD", "FEATURE_ORDER", "mixed", "model.encoder.feature_order='mixed': must be "
                                               "one of 'low2high', 'high2low'"),
    ("SEM_SEG_HEAD", "NORM", "BN", "SEM_SEG_HEAD.NORM 'BN' is not supported"),
])
def test_unsupported_options_are_named_with_their_value(section, key, value, message,
                                                        tmp_path):
    model = copy.deepcopy(CONFIGS["maskdino_R50_bs16_50ep_3s.yaml"][0])
    model[section][key] = value
    path = write_config(tmp_path, "variant.yaml", model)
    with pytest.raises(ConfigError, match=message) as error:
        load_official(path)
    assert "every official" not in str(error.value)


def test_a_swin_model_runs_on_an_image_whose_stages_are_not_window_multiples(tmp_path):
    """A small Swin variant of the Swin-L config end to end (build, predict)."""
    model = copy.deepcopy(CONFIGS["swin/maskdino_R50_bs16_50ep_4s_dowsample1_2048.yaml"][0])
    model["SWIN"].update(EMBED_DIM=32, DEPTHS=[2, 2, 2, 2], NUM_HEADS=[1, 2, 4, 8],
                         WINDOW_SIZE=7)
    model["SEM_SEG_HEAD"].update(CONVS_DIM=64, MASK_DIM=64, TRANSFORMER_ENC_LAYERS=1,
                                 DIM_FEEDFORWARD=64)
    model["MaskDINO"].update(HIDDEN_DIM=64, DEC_LAYERS=2, NUM_OBJECT_QUERIES=10,
                             DIM_FEEDFORWARD=64)
    network = load_official(write_config(tmp_path, "swin/small.yaml", model))
    image = torch.randint(0, 255, (3, 72, 100), dtype=torch.uint8)
    got = network.predict([image])
    # padded to 96 x 128; the decoder reads the encoder's levels (stride 4 first) reversed
    assert got.outputs["spatial_shapes"].tolist() == [[2, 2], [3, 4], [6, 8], [12, 16],
                                                      [24, 32]]
    assert got.instances[0]["pred_masks"].shape[-2:] == (72, 100)
