"""dimask's own training checkpoints (written by
:func:`dimaskdino.engine.checkpointer.save_checkpoint`: the weights, the optimizer, the
iteration and the experiment config), read back into a model, and the entry point that
loads either kind of checkpoint for evaluation (:func:`load_model`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from dimaskdino.checkpoint.files import CheckpointError, read_torch_file
from dimaskdino.checkpoint.official import is_official_checkpoint, load_official
from dimaskdino.checkpoint.strict import load_strict
from dimaskdino.config import ConfigError, ExperimentConfig, config_from_dict
from dimaskdino.modeling.model import DIMaskDINO

# the "format" entry of the training checkpoints dimask writes
# (:func:`dimaskdino.engine.checkpointer.save_checkpoint`)
TRAINING_FORMAT = "dimask-checkpoint-1"


def load_model(checkpoint: str | Path, official_config: str | Path | None = None
               ) -> tuple[DIMaskDINO, ExperimentConfig]:
    """A model ready for evaluation from a dimask training checkpoint (its config is inside)
    or from an official ``.pth`` with its YAML (``official_config``).

    Returns the model in eval mode and the experiment config (for an official checkpoint:
    the default data settings, evaluation at shorter side 800 / longer side <= 1333).
    """
    if official_config is not None:
        model = load_official(official_config, checkpoint)
        return model, ExperimentConfig(model=model.config)
    path = Path(checkpoint)
    state = read_torch_file(path)
    if path.suffix == ".pth" and is_official_checkpoint(state):
        raise CheckpointError(f"{path} is an official checkpoint; pass its YAML with "
                              "--official-config")
    state = checked_checkpoint(state, path)
    try:
        config = config_from_dict(ExperimentConfig, state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path} holds a config this dimask cannot read: {exc}") from None
    model = DIMaskDINO(config.model)
    load_weights(model, state["model"], f"{path} does not fit its own config")
    return model.eval(), config


def checked_checkpoint(data, path: str | Path) -> dict:
    """``data``, read from ``path``, if it is a dimask training checkpoint."""
    if not isinstance(data, dict) or data.get("format") != TRAINING_FORMAT:
        raise CheckpointError(f"{path} is not a dimask training checkpoint")
    return data


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``state`` into ``model`` strictly (:func:`~dimaskdino.checkpoint.strict.load_strict`);
    a mismatch (another architecture size, missing or unexpected keys) is a CheckpointError
    ``what: <the first mismatch>``."""
    load_strict(model.state_dict(), state, what)
