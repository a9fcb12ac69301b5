"""The reader of official detectron2-style YAML configs (MaskDINO's and DI-MaskDINO's).

An official config is either a full ``cfg.dump()`` or a config file whose ``_BASE_`` chain
sets only some keys; the others take detectron2's and MaskDINO's defaults
(:data:`OFFICIAL_DEFAULTS`, the ones the model reads). The model's config is built from the
result by :meth:`~dimaskdino.modeling.model.ModelConfig.from_official`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from dimaskdino.config_ranges import ConfigError

# detectron2's defaults overridden by add_maskdino_config / add_dimaskdino_config, limited
# to the keys dimask reads.
OFFICIAL_DEFAULTS: dict = {
    "MODEL": {
        "BACKBONE": {"NAME": "build_resnet_backbone", "FREEZE_AT": 2},
        "RESNETS": {
            "DEPTH": 50, "NUM_GROUPS": 1, "WIDTH_PER_GROUP": 64, "STEM_OUT_CHANNELS": 64,
            "RES2_OUT_CHANNELS": 256, "STRIDE_IN_1X1": True, "RES5_DILATION": 1,
            "OUT_FEATURES": ["res4"], "NORM": "FrozenBN",
            "DEFORM_ON_PER_STAGE": [False, False, False, False],
        },
        "PIXEL_MEAN": [103.530, 116.280, 123.675],
        "PIXEL_STD": [1.0, 1.0, 1.0],
        "SEM_SEG_HEAD": {
            "NUM_CLASSES": 54, "CONVS_DIM": 128, "MASK_DIM": 256, "NORM": "GN",
            "IN_FEATURES": ["p2", "p3", "p4", "p5"], "COMMON_STRIDE": 4,
            "PIXEL_DECODER_NAME": "MaskDINOEncoder",
            "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
            "DIM_FEEDFORWARD": 1024, "TOTAL_NUM_FEATURE_LEVELS": 4,
            "FEATURE_ORDER": "high2low", "TRANSFORMER_ENC_LAYERS": 0,
        },
        "MaskDINO": {
            "TRANSFORMER_DECODER_NAME": "MaskDINODecoder", "HIDDEN_DIM": 256,
            "NUM_OBJECT_QUERIES": 100, "NHEADS": 8, "DROPOUT": 0.1, "DIM_FEEDFORWARD": 2048,
            "DEC_LAYERS": 6, "TI_LAYERS": 2, "FIRST_SELECTED_QUERIES": 600,
            "NUM_GUIDING_TOKENS": 50, "ENFORCE_INPUT_PROJ": False, "TWO_STAGE": True,
            "INITIALIZE_BOX_TYPE": "no", "INITIAL_PRED": True, "LEARN_TGT": False,
            "SIZE_DIVISIBILITY": 32,
        },
    },
    "INPUT": {"FORMAT": "BGR"},
    "TEST": {"DETECTIONS_PER_IMAGE": 100},
}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_chain(path: Path, seen: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"_BASE_ cycle through {path}")
    if not path.is_file():
        raise ConfigError(f"config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a mapping of config keys")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    return _merge(_read_chain(path.parent / base, (*seen, path)), data)


def load_official_config(path: str | Path) -> dict:
    """Read an official YAML (a full dump, or a file with a ``_BASE_`` chain, relative to
    each file) over :data:`OFFICIAL_DEFAULTS`."""
    return _merge(OFFICIAL_DEFAULTS, _read_chain(Path(path), ()))


