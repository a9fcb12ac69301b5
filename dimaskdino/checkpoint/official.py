"""Official MaskDINO / DI-MaskDINO checkpoints: their key names mapped onto this package's
(:func:`convert_official_state_dict`, a declarative table of prefixes and aliases), and the
model an official YAML and ``.pth`` describe (:func:`load_official`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from dimaskdino.checkpoint.files import CheckpointError, read_torch_file
from dimaskdino.checkpoint.strict import load_strict
from dimaskdino.config.official import load_official_config
from dimaskdino.modeling.model import DIMaskDINO, ModelConfig

# Official (detectron2 / MaskDINO) key prefixes -> this package's, first match wins.
_OFFICIAL_PREFIXES = (
    ("sem_seg_head.pixel_decoder.", "encoder."),
    ("sem_seg_head.predictor.enc_output", "predictor.selection.enc_output"),
    ("sem_seg_head.predictor.class_embed.", "predictor.heads.class_embed."),
    ("sem_seg_head.predictor.mask_embed.", "predictor.heads.mask_embed."),
    ("sem_seg_head.predictor.decoder_norm.", "predictor.heads.decoder_norm."),
    ("sem_seg_head.predictor._bbox_embed.", "predictor.heads.bbox_embed."),
    ("sem_seg_head.predictor.oldm_norm.", "predictor.di.norm."),
    ("sem_seg_head.predictor._oldm_bbox_embed.", "predictor.di.bbox_embed."),
    ("sem_seg_head.predictor.oldm.", "predictor.di."),
    ("sem_seg_head.predictor.query_guide_feature_update.", "predictor.bato.feature_update."),
    ("sem_seg_head.predictor.decoder.mask_output_conv.", "predictor.bato.mask_output_conv."),
    ("sem_seg_head.predictor.", "predictor."),
    ("backbone.", "backbone."),
    ("pixel_mean", "pixel_mean"),
    ("pixel_std", "pixel_std"),
)
# Official keys that carry no weights: the loss's class weights, rebuilt from the config.
_OFFICIAL_DROPPED = ("criterion.",)
# Official keys that alias a shared module registered under another name.
_OFFICIAL_ALIASES = (
    (r"^sem_seg_head\.predictor\.(decoder\.)?bbox_embed\.\d+\.",
     "sem_seg_head.predictor._bbox_embed."),
    (r"^sem_seg_head\.predictor\.decoder\.norm\.", "sem_seg_head.predictor.decoder_norm."),
    (r"^sem_seg_head\.predictor\.(oldm_bbox_embed|oldm\.bbox_embed)\.\d+\.",
     "sem_seg_head.predictor._oldm_bbox_embed."),
    (r"^sem_seg_head\.predictor\.oldm\.norm\.", "sem_seg_head.predictor.oldm_norm."),
    (r"^sem_seg_head\.predictor\.(oldm|decoder)\.class_embed\.",
     "sem_seg_head.predictor.class_embed."),
    (r"^sem_seg_head\.predictor\.decoder\.mask_embed\.", "sem_seg_head.predictor.mask_embed."),
    (r"^sem_seg_head\.predictor\.decoder\.query_guide_feature_update\.",
     "sem_seg_head.predictor.query_guide_feature_update."),
)


def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official MaskDINO / DI-MaskDINO state dict to this package's keys.

    The official model registers shared modules under several names (``_bbox_embed``,
    ``bbox_embed.<i>``, ``decoder.bbox_embed.<i>``; ``decoder_norm``, ``decoder.norm``; for
    DI-MaskDINO also ``oldm.*`` copies of the DI box head, norm and class head, and
    ``decoder.*`` copies of the class head, mask head and BATO's feature update); each alias
    must equal its canonical entry and is dropped, as is the
    loss's ``criterion.empty_weight``. A key no rule knows raises :class:`CheckpointError`.
    """
    out = {}
    for key, value in state.items():
        if key.startswith(_OFFICIAL_DROPPED):
            continue
        alias = next((re.sub(pattern, canonical, key) for pattern, canonical
                      in _OFFICIAL_ALIASES if re.match(pattern, key)), None)
        if alias is not None:
            if alias not in state:
                raise CheckpointError(f"{key} aliases {alias}, which the checkpoint lacks")
            if not torch.equal(state[alias], value):
                raise CheckpointError(f"{key} should equal its shared module {alias} but "
                                      "differs")
            continue
        prefix = next(((old, new) for old, new in _OFFICIAL_PREFIXES if key.startswith(old)),
                      None)
        if prefix is None:
            raise CheckpointError(f"unrecognised official checkpoint key {key!r}")
        out[prefix[1] + key[len(prefix[0]):]] = value
    return out


def load_official(config: str | Path, weights: str | Path | Mapping[str, torch.Tensor] | None
                  = None, dtype: torch.dtype | None = None) -> DIMaskDINO:
    """Build the model an official YAML describes and load official weights strictly.

    Args:
        config: an official detectron2 YAML (a full dump, or a config file with its
            ``_BASE_`` chain).
        weights: an official ``.pth`` (a detectron2 checkpoint dict with a ``model`` entry,
            or a plain state dict), or a state dict; None leaves the initialisation.
        dtype: the model's floating dtype; default: that of the weights (float32 for the
            released checkpoints, float64 for the golden fixtures), else float32.

    Returns:
        the model in eval mode.

    Raises:
        CheckpointError / ConfigError: with one line saying what does not fit.
    """
    model = DIMaskDINO(ModelConfig.from_official(load_official_config(config)))
    if weights is not None:
        state = weights if isinstance(weights, Mapping) else read_official_weights(weights)
        state = convert_official_state_dict(state)
        if dtype is None:
            dtype = next((v.dtype for v in state.values() if v.is_floating_point()), None)
        if dtype is not None:
            model = model.to(dtype)
        load_strict(model.state_dict(), state, f"checkpoint does not fit the "
                    f"{model.config.name} the config describes")
    elif dtype is not None:
        model = model.to(dtype)
    return model.eval()


def read_official_weights(path: str | Path) -> Mapping[str, torch.Tensor]:
    """The state dict of an official ``.pth``: a detectron2 checkpoint dict or a bare one."""
    data = read_torch_file(path)
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds no state dict")
    return data


def is_official_checkpoint(state) -> bool:
    """An official checkpoint: a detectron2 dict (``model`` without our ``format``) or a bare
    state dict of ``sem_seg_head`` keys."""
    if not isinstance(state, dict) or "format" in state:
        return False
    keys = state.get("model", state)
    return isinstance(keys, dict) and any(str(k).startswith("sem_seg_head") for k in keys)
