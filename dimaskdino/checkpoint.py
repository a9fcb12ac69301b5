"""Checkpoint import: ImageNet ResNet weights in torchvision and detectron2 layouts.

Backbone names here are detectron2's (``stem.conv1``, ``res2.0.conv1.norm``...), the
names official MaskDINO / DI-MaskDINO checkpoints use under ``backbone.``. Two other
layouts are converted:

* torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``...), as
  saved by ``torch.save(torchvision.models.resnet50(...).state_dict())``;
* detectron2 ``.pkl`` files, a pickled dict whose ``model`` (or ``blobs``) entry maps names
  to numpy arrays, either already in detectron2 names (torchvision weights converted by
  detectron2's script) or in the MSRA Caffe2 names (``res2_0_branch2a_w``,
  ``res2_0_branch2a_bn_s``...) of the original ``R-50.pkl``. Caffe2 batch norms carry only a
  scale and a bias: their statistics stay FrozenBatchNorm's identity (mean 0, var 1 - eps).

``.pkl`` files are unpickled, which can run code: load only files you trust.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dimaskdino.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    config_from_dict,
    load_official_config,
)
from dimaskdino.modeling.backbone import ResNet
from dimaskdino.modeling.backbone.resnet import BASIC_DEPTHS, BLOCKS_PER_DEPTH, STAGES
from dimaskdino.modeling.model import DIMaskDINO

# the "format" entry of the training checkpoints dimask writes
# (:func:`dimaskdino.engine.checkpointer.save_checkpoint`)
TRAINING_FORMAT = "dimask-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; one-line message."""


_TORCHVISION_RULES = (
    (r"^conv1\.", "stem.conv1."),
    (r"^bn1\.", "stem.conv1.norm."),
    (r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}."),
    (r"\.bn(\d)\.", r".conv\1.norm."),
    (r"\.downsample\.0\.", ".shortcut."),
    (r"\.downsample\.1\.", ".shortcut.norm."),
)
_CAFFE2_BRANCHES = {"branch1": "shortcut", "branch2a": "conv1", "branch2b": "conv2",
                    "branch2c": "conv3"}
_CAFFE2_SUFFIXES = {"_w": ".weight", "_bn_s": ".norm.weight", "_bn_b": ".norm.bias"}


def torchvision_to_detectron2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict to detectron2 names (classifier dropped)."""
    out = {}
    for key, value in state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        name = key
        for pattern, replacement in _TORCHVISION_RULES:
            name = re.sub(pattern, replacement, name)
        out[name] = value
    return out


# detectron2 names -> torchvision's, the inverse of _TORCHVISION_RULES (first match wins)
_DETECTRON2_RULES = (
    (r"^stem\.conv1\.norm\.", "bn1."),
    (r"^stem\.conv1\.", "conv1."),
    (r"^res(\d)\.", lambda m: f"layer{int(m.group(1)) - 1}."),
    (r"\.conv(\d)\.norm\.", r".bn\1."),
    (r"\.shortcut\.norm\.", ".downsample.1."),
    (r"\.shortcut\.", ".downsample.0."),
)


def detectron2_to_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a detectron2-layout ResNet state dict to torchvision's names (the inverse of
    :func:`torchvision_to_detectron2`)."""
    out = {}
    for key, value in state.items():
        name = key
        for pattern, replacement in _DETECTRON2_RULES:
            name = re.sub(pattern, replacement, name)
        out[name] = value
    return out


def caffe2_to_detectron2(blobs: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename MSRA Caffe2 ResNet blobs (``res2_0_branch2a_w``...) to detectron2 names."""
    out = {}
    for key, value in blobs.items():
        if key.startswith("fc") or key.endswith("_momentum"):
            continue
        suffix = next((s for s in _CAFFE2_SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            raise CheckpointError(f"unrecognised Caffe2 ResNet blob {key!r}")
        base = key[: -len(suffix)]
        if base in ("conv1", "res_conv1"):
            name = "stem.conv1"
        elif match := re.fullmatch(r"res(\d)_(\d+)_(branch1|branch2[abc])", base):
            stage, block, branch = match.groups()
            name = f"res{stage}.{block}.{_CAFFE2_BRANCHES[branch]}"
        else:
            raise CheckpointError(f"unrecognised Caffe2 ResNet blob {key!r}")
        out[name + _CAFFE2_SUFFIXES[suffix]] = torch.as_tensor(np.asarray(value))
    return out


TORCHVISION, CAFFE2 = "torchvision", "Caffe2"
# what each layout's weights were trained on: RGB input normalised by this mean and std
# (the MSRA Caffe2 weights: BGR pixels minus the mean, std 1, stride in the 1x1 convolution)
LAYOUT_INPUT = {TORCHVISION: ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), False),
                CAFFE2: ((123.675, 116.28, 103.53), (1.0, 1.0, 1.0), True)}


def read_backbone_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read ImageNet ResNet weights (torchvision ``.pth`` or detectron2 ``.pkl``) in
    detectron2 names, with their layout: :data:`TORCHVISION` (torchvision files and
    detectron2-named ``.pkl``, which detectron2 converts from torchvision) or
    :data:`CAFFE2` (MSRA Caffe2 names)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone weights not found: {path}")
    if path.suffix == ".pkl":
        data = _unpickle(path)
        blobs = data.get("model", data.get("blobs", data)) if isinstance(data, dict) else None
        if not isinstance(blobs, Mapping):
            raise CheckpointError(f"{path} holds no 'model' or 'blobs' dict of arrays")
        if any(k.startswith("stem.") for k in blobs):  # already detectron2 names
            return {k: torch.as_tensor(np.asarray(v)) for k, v in blobs.items()
                    if not k.startswith(("fc", "linear"))}, TORCHVISION
        return caffe2_to_detectron2(blobs), CAFFE2
    state = read_torch_file(path)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise CheckpointError(f"{path} holds no ResNet state dict (a whole-model checkpoint "
                              "goes to model.weights)")
    if any(k.startswith("layer1.") for k in state):
        return torchvision_to_detectron2(state), TORCHVISION
    return dict(state), TORCHVISION


def _unpickle(path: Path):
    if not _starts_like_a_pickle(path):
        raise CheckpointError(f"{path} is not a pickle file")
    with path.open("rb") as f:
        try:
            return pickle.load(f, encoding="latin1")
        except Exception as exc:
            raise CheckpointError(f"cannot unpickle {path}: {_first_line(exc)}") from None


# ImageNet Swin entries no detection backbone has: the classifier, its final norm, and the
# fixed shift masks of classification Swin (rebuilt per input size here)
_SWIN_CLASSIFIER = (re.compile(r"^(head|norm)\."), re.compile(r"\.attn_mask$"))


def read_swin_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ImageNet Swin weights in the official backbone's names.

    Accepts the Swin repository's ``.pth`` (a dict whose ``model`` entry is the state dict,
    keys ``layers.0.blocks.0.attn.qkv.weight``...) or a plain state dict, and the detectron2
    ``.pkl`` MaskDINO's converter writes (``{"model": {name: tensor or array}, ...}``); a
    ``backbone.`` prefix is removed. The classifier (``head.*``), its final ``norm.*`` and
    ``attn_mask`` buffers are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Swin weights not found: {path}")
    data = _unpickle(path) if path.suffix == ".pkl" else read_torch_file(path)
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds no 'model' dict of Swin weights")
    out = {}
    for key, value in data.items():
        name = str(key).removeprefix("backbone.")
        if not any(pattern.search(name) for pattern in _SWIN_CLASSIFIER):
            out[name] = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value)
                                        else value)
    return out


def load_swin_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ImageNet Swin weights (see :func:`read_swin_weights`) into a
    :class:`~dimaskdino.modeling.backbone.SwinTransformer`.

    Every weight must find a parameter or buffer of the same shape (a different window size
    shows as a bias-table shape), ``relative_position_index`` must equal the backbone's own;
    only the detection backbone's output norms ``norm0..norm3`` may be missing (they keep
    their initialisation, as in the official training).
    """
    _copy_weights(backbone.state_dict(), read_swin_weights(path), path, "Swin",
                  lambda key: re.match(r"norm\d\.", key), check=_check_window_offsets)


def _check_window_offsets(key: str, value: torch.Tensor, own: torch.Tensor) -> str | None:
    if key.endswith("relative_position_index") and not torch.equal(value, own):
        return f"{key} differs from the window's offsets"
    return None


def _copy_weights(own: dict[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
                  path: str | Path, what: str, may_miss, check=None) -> None:
    """Copy ``weights`` into the state tensors ``own``: every weight must fit one of the same
    shape (and pass ``check(key, weight, own_tensor)``, which returns an error or None), and
    every ``own`` entry be given unless ``may_miss(key)``."""
    unexpected = sorted(set(weights) - set(own))
    if unexpected:
        raise CheckpointError(f"{path}: {len(unexpected)} weights fit no {what} parameter, "
                              f"e.g. {unexpected[0]!r}")
    for key, value in weights.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{path}: {key} has shape {tuple(value.shape)}, the backbone "
                                  f"expects {tuple(own[key].shape)}")
        if check is not None and (error := check(key, value, own[key])):
            raise CheckpointError(f"{path}: {error}")
    missing = [k for k in own if k not in weights and not may_miss(k)]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} {what} weights missing, "
                              f"e.g. {missing[0]!r}")
    with torch.no_grad():
        for key, value in weights.items():
            own[key].copy_(value)



def resnet_name(weights: Mapping[str, torch.Tensor]) -> str:
    """``ResNet-50`` (or ``a ResNet with blocks (..)``) from detectron2-named weights."""
    blocks = tuple(len({k.split(".")[1] for k in weights if k.startswith(f"{stage}.")})
                   for stage in STAGES)
    bottleneck = any(".conv3." in k for k in weights)
    depth = next((d for d, b in BLOCKS_PER_DEPTH.items() if b == blocks
                  and (d not in BASIC_DEPTHS) == bottleneck), None)
    return f"ResNet-{depth}" if depth else f"a ResNet with blocks {blocks}"


def check_backbone_layout(model: ModelConfig, layout: str, path: str | Path) -> None:
    """CheckpointError where ``model``'s input (RGB, pixel mean and std) or
    ``stride_in_1x1`` do not fit weights of ``layout``."""
    mean, std, stride_in_1x1 = LAYOUT_INPUT[layout]
    fix = []
    if model.input_format != "RGB":
        fix.append("model.input_format=RGB")
    if not np.allclose(model.pixel_mean, mean, atol=1e-3):
        fix.append(f"model.pixel_mean=[{', '.join(map(str, mean))}]")
    if layout == TORCHVISION and not np.allclose(model.pixel_std, std, atol=1e-3):
        fix.append(f"model.pixel_std=[{', '.join(map(str, std))}]")
    if model.backbone.stride_in_1x1 != stride_in_1x1:
        fix.append(f"model.backbone.stride_in_1x1={str(stride_in_1x1).lower()}")
    if fix:
        expects = ("RGB input, torchvision's mean and std, the stride in the 3x3 convolution"
                   if layout == TORCHVISION else "BGR pixels minus the mean (123.675, "
                   "116.28, 103.53 in RGB order), the stride in the 1x1 convolution")
        raise CheckpointError(f"{path} is in the {layout} layout ({expects}), which the model "
                              f"does not fit: set {' '.join(fix)}")


def caffe2_to_rgb(weights: dict[str, torch.Tensor], pixel_std) -> dict[str, torch.Tensor]:
    """Caffe2 weights for RGB input normalised by ``pixel_std``: the first convolution reads
    BGR pixels minus the mean, so its input channels are reversed and scaled by the std
    (exact, the padding being zero in both)."""
    std = torch.tensor(pixel_std, dtype=weights["stem.conv1.weight"].dtype)
    return {**weights, "stem.conv1.weight":
            weights["stem.conv1.weight"].flip(1) * std.view(1, -1, 1, 1)}


def load_backbone_weights(backbone: nn.Module, path: str | Path,
                          model: ModelConfig | None = None) -> str:
    """Load ImageNet weights into a detectron2-layout ResNet; returns their layout.

    With ``model`` (the config of the model the backbone is part of), the input and
    ``stride_in_1x1`` must fit the weights' layout (:func:`check_backbone_layout`); Caffe2
    weights are then converted for the model's RGB input (:func:`caffe2_to_rgb`).
    Every weight of the file must find a parameter or buffer of the same shape; backbone
    entries the file lacks are allowed only for FrozenBatchNorm statistics (Caffe2 files).
    """
    weights, layout = read_backbone_weights(path)
    if model is not None:
        check_backbone_layout(model, layout, path)
        if layout == CAFFE2:
            weights = caffe2_to_rgb(weights, model.pixel_std)
    own = backbone.state_dict()
    if isinstance(backbone, ResNet) and resnet_name(weights) != resnet_name(own):
        raise CheckpointError(f"{path} holds {resnet_name(weights)} weights; the model's "
                              f"backbone is {resnet_name(own)} (model.backbone.depth="
                              f"{backbone.config.depth})")
    _copy_weights(own, weights, path, "backbone",
                  lambda key: key.endswith(("running_mean", "running_var")))
    return layout


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
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint does not fit the {model.config.name} the config describes: "
                f"{len(missing)} missing keys (e.g. {missing[:1]}), {len(unexpected)} "
                f"unexpected (e.g. {unexpected[:1]})")
        for key, value in state.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise CheckpointError(f"checkpoint key {key} has shape {tuple(value.shape)}, "
                                      f"the config's model expects {tuple(own[key].shape)}")
        model.load_state_dict(state, strict=True)
    elif dtype is not None:
        model = model.to(dtype)
    return model.eval()


def read_torch_file(path: str | Path, mmap: bool = False):
    """``torch.load`` (CPU, tensors and plain containers only: ``weights_only=True``, so
    loading never runs code from the file) with one-line errors: missing, empty, truncated
    or corrupt files, and files holding other Python objects. ``mmap``: tensors stay in the
    file until used (zip-format files only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a copy or a save that "
                              "did not finish")
    if not zipfile.is_zipfile(path) and not _starts_like_a_pickle(path):
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: it is not a complete "
                              f"PyTorch checkpoint ({path.stat().st_size} bytes; a copy or a "
                              "save that did not finish, or not written by torch.save)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL [\w.]+", str(exc))
        if found is None:  # not a pickle torch.load can read at all
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt") from None
        what = found.group(0).replace("Unsupported global: GLOBAL", "the Python class")
        raise CheckpointError(
            f"checkpoint {path} holds more than tensors and plain containers ({what}); "
            "dimask reads checkpoints with torch.load(weights_only=True) and never unpickles "
            "code from a file") from None
    except Exception as exc:
        text = str(exc)
        if "central directory" in text or isinstance(exc, EOFError):
            size = path.stat().st_size
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({size} bytes): "
                                  "a copy or a save that did not finish") from None
        reason = (text.strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from None


def _starts_like_a_pickle(path: Path) -> bool:
    """Pickles of protocol 2 and later (torch's legacy files, detectron2's .pkl) start with
    the PROTO opcode."""
    with path.open("rb") as f:
        return f.read(1) == b"\x80"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_official_weights(path: str | Path) -> Mapping[str, torch.Tensor]:
    """The state dict of an official ``.pth``: a detectron2 checkpoint dict or a bare one."""
    data = read_torch_file(path)
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds no state dict")
    return data


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
    """``model.load_state_dict(state)``; a mismatch (another architecture size, missing or
    unexpected keys) is a CheckpointError ``what: <the first mismatch>``."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise CheckpointError(f"{what}: {(lines[1:2] or lines or [''])[0].strip()}") from None


def is_official_checkpoint(state) -> bool:
    """An official checkpoint: a detectron2 dict (``model`` without our ``format``) or a bare
    state dict of ``sem_seg_head`` keys."""
    if not isinstance(state, dict) or "format" in state:
        return False
    keys = state.get("model", state)
    return isinstance(keys, dict) and any(str(k).startswith("sem_seg_head") for k in keys)
