"""Starting weights: what a training run loads before its first iteration.

* ``model.backbone_weights``: ImageNet weights of the ResNet (torchvision ``.pth``,
  detectron2 ``.pkl`` with detectron2 or Caffe2 names, see :mod:`dimaskdino.checkpoint`;
  the model's input and ``stride_in_1x1`` must fit the file's layout) or of the Swin
  (the Swin repository's ``.pth``, MaskDINO's converted ``.pkl``); ``pretrained:NAME``,
  dimask's own classification-pretrained backbone (:mod:`dimaskdino.engine.pretrain`,
  built once and cached). ``none`` trains from scratch on purpose.
* ``model.weights`` (+ ``model.weights_config``, the YAML of an official checkpoint): the
  whole model from a dimask training checkpoint or an official MaskDINO / DI-MaskDINO one.
  The tensors whose shapes follow the class count (:data:`CLASS_DEPENDENT`) keep the fresh
  initialisation when the counts differ; every other tensor must fit exactly.

Under ``torchrun`` only the main process reads the file; the others receive its tensors (and
its errors) by broadcast, so every process starts from the same weights.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from dimaskdino.checkpoint import (
    CheckpointError,
    checked_checkpoint,
    convert_official_state_dict,
    is_official_checkpoint,
    load_backbone_weights,
    load_strict,
    load_swin_weights,
    read_official_weights,
    read_torch_file,
)
from dimaskdino.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    apply_overrides,
    config_from_dict,
    load_official_config,
)
from dimaskdino.data.specs import num_categories
from dimaskdino.engine import distributed
from dimaskdino.engine.pretrain import resolve_backbone_weights
from dimaskdino.modeling.backbone import SwinTransformer
from dimaskdino.modeling.model import DIMaskDINO

# the tensors whose first dimension is the class count: the class head, shared by every
# stage (the encoder's proposals, DI's token interaction, every decoder layer), and the
# denoising queries' label embedding
CLASS_DEPENDENT = {
    "predictor.heads.class_embed.weight": "class head",
    "predictor.heads.class_embed.bias": "class head",
    "predictor.label_enc.weight": "denoising label embedding",
}
# the model's settings that its weights depend on although no tensor shape shows them
LAYOUT_FIELDS = ("input_format", "pixel_mean", "pixel_std")


def read_model_weights(path: str | Path, official_config: str | Path | None = None,
                       mmap: bool = False) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """The state dict (this package's names) and model config of a dimask training
    checkpoint, or of an official ``.pth`` with its YAML ``official_config``; ``mmap``
    leaves a dimask checkpoint's tensors in the file (to read its config only)."""
    if official_config is not None:
        model = ModelConfig.from_official(load_official_config(official_config))
        return convert_official_state_dict(read_official_weights(path)), model
    data = read_torch_file(path, mmap)
    if is_official_checkpoint(data):
        raise CheckpointError(f"{path} is an official checkpoint; pass its YAML "
                              "(model.weights_config=YAML, or --official-config)")
    data = checked_checkpoint(data, path)
    try:
        model = config_from_dict(ModelConfig, data["config"]["model"], "model")
    except ConfigError as exc:
        raise CheckpointError(f"{path} holds a config this dimask cannot read: {exc}") from None
    return data["model"], model


def _check_layout(config: ModelConfig, source: ModelConfig, path: str | Path) -> None:
    """The settings that shapes do not show must agree with the checkpoint's."""
    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    differ = [f"model.{name}={plain(getattr(source, name))}" for name in LAYOUT_FIELDS
              if plain(getattr(config, name)) != plain(getattr(source, name))]
    if config.backbone.stride_in_1x1 != source.backbone.stride_in_1x1:
        differ.append("model.backbone.stride_in_1x1="
                      f"{str(source.backbone.stride_in_1x1).lower()}")
    if differ:
        raise CheckpointError(f"{path} was trained with {' '.join(differ)}, which the model "
                              "does not have (dimask train --init-from takes the checkpoint's "
                              "architecture)")


def fit_model_weights(model: DIMaskDINO, state: Mapping[str, torch.Tensor],
                      path: str | Path) -> list[str]:
    """Copy ``state`` into ``model``: every key must match and every shape fit, except
    the :data:`CLASS_DEPENDENT` tensors of another class count, which keep their fresh
    initialisation. Returns those keys."""
    return load_strict(model.state_dict(), state, f"{path} does not fit the "
                       f"{model.config.name}", may_differ=CLASS_DEPENDENT.__contains__,
                       hint="dimask train --init-from takes the checkpoint's architecture")


def load_model_weights(model: DIMaskDINO, path: str | Path,
                       official_config: str | Path | None = None) -> str:
    """:func:`read_model_weights` into ``model`` (:func:`fit_model_weights`), the model's
    input settings checked against the checkpoint's; returns the line saying what was
    loaded and what re-initialised."""
    state, source = read_model_weights(path, official_config)
    _check_layout(model.config, source, path)
    kept = fit_model_weights(model, state, path)
    loaded = f"initialised from {path}: {len(state) - len(kept)} tensors loaded"
    if not kept:
        return f"{loaded}, none re-initialised (same class count)"
    count = state[kept[0]].shape[0]
    names = ", ".join(f"{k} ({CLASS_DEPENDENT[k]})" for k in kept)
    return (f"{loaded}; re-initialised for {model.config.predictor.num_classes} classes (the "
            f"checkpoint has {count}): {names}")


def load_starting_weights(model: DIMaskDINO) -> str | None:
    """Load what ``model.config`` names (in this process); returns the line to report, or
    None when it names nothing."""
    config = model.config
    if config.weights is not None:
        return load_model_weights(model, config.weights, config.weights_config)
    if config.backbone_weights in (None, "none"):
        return None
    path = resolve_backbone_weights(config.backbone_weights,
                                    announce=lambda line: print(line, file=sys.stderr))
    if isinstance(model.backbone, SwinTransformer):
        load_swin_weights(model.backbone, path)
        layout = "Swin"
    else:
        layout = load_backbone_weights(model.backbone, path, config)
    source = config.backbone_weights if path == config.backbone_weights else \
        f"{config.backbone_weights} ({path})"
    return (f"backbone initialised from {source} ({layout} layout, "
            f"{len(model.backbone.state_dict())} tensors)")


def initialize_model(model: DIMaskDINO) -> str | None:
    """:func:`load_starting_weights` on the main process, then its tensors (or its error,
    raised on every process) broadcast to the others; returns the line to report."""
    note, error = None, None
    if distributed.is_main_process():
        try:
            note = load_starting_weights(model)
        except (CheckpointError, ConfigError) as exc:
            error = str(exc)
    note, error = distributed.broadcast_object((note, error))
    if error is not None:
        raise CheckpointError(error)
    if note is not None:
        distributed.broadcast_state(model)
    return note


def init_from_checkpoint(config: ExperimentConfig, path: str | Path,
                         official_config: str | Path | None, overrides: list[str]
                         ) -> ExperimentConfig:
    """``config`` (a preset with ``overrides`` applied) starting from the whole model of
    ``path``: the checkpoint's architecture (its stored config, or ``official_config``),
    the class count of ``config``'s dataset, ``overrides`` applied again on top (so that
    ``model.*`` ones change the checkpoint's model)."""
    if official_config is not None:
        source = ModelConfig.from_official(load_official_config(official_config))
    else:
        _, source = read_model_weights(path, mmap=True)
    classes = num_categories(config.data.dataset)
    model = replace(source, predictor=replace(source.predictor, num_classes=classes),
                    backbone_weights=None, weights=str(path),
                    weights_config=None if official_config is None else str(official_config))
    return apply_overrides(replace(config, model=model), overrides)
