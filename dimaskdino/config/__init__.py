"""Typed configuration, one idea per module:

- :mod:`~dimaskdino.config.schema`: the experiment's dataclasses (data, solver, loss, the
  experiment), each field with its valid range; the model's,
  :class:`~dimaskdino.modeling.model.ModelConfig`, lives beside its parts' configs in
  :mod:`dimaskdino.modeling`, and the ranges' vocabulary and checker in
  :mod:`dimaskdino.config_ranges` (the model's configs use it: inside this package it would
  make the package and the model import each other);
- :mod:`~dimaskdino.config.overrides`: configs to plain dicts and back, ``key=value``
  overrides;
- :mod:`~dimaskdino.config.official`: the reader of official detectron2-style YAML configs;
- :mod:`~dimaskdino.config.presets`: the named experiments.

Their public names are importable from here (``from dimaskdino.config import preset``).
"""

from dimaskdino.config.official import OFFICIAL_DEFAULTS, load_official_config
from dimaskdino.config.overrides import apply_overrides, config_from_dict, config_to_dict
from dimaskdino.config.presets import (
    MODELS,
    PAPER_BACKBONE,
    PRESETS,
    SWIN_BACKBONE,
    check_starting_weights,
    preset,
    starts_from_imagenet,
    swin_large,
)
from dimaskdino.config.schema import (
    PRECISIONS,
    PRESET_NAMES,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    SolverConfig,
    ranges_table,
)
from dimaskdino.config_ranges import ConfigError, RangeError
from dimaskdino.modeling.model import ModelConfig

__all__ = [
    "MODELS", "OFFICIAL_DEFAULTS", "PAPER_BACKBONE", "PRECISIONS", "PRESETS", "PRESET_NAMES",
    "SWIN_BACKBONE", "ConfigError", "DataConfig", "ExperimentConfig", "LossConfig",
    "ModelConfig", "RangeError", "SolverConfig", "apply_overrides", "check_starting_weights",
    "config_from_dict", "config_to_dict", "load_official_config", "preset", "ranges_table",
    "starts_from_imagenet", "swin_large",
]
