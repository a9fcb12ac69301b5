"""ImageNet backbone weights: ResNets in the torchvision and detectron2 ``.pkl`` layouts
(detectron2 or MSRA Caffe2 names), and Swin Transformers from the Swin repository or
MaskDINO's converter, loaded strictly into the model's backbone.

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

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dimaskdino.checkpoint.files import CheckpointError, read_torch_file, unpickle
from dimaskdino.checkpoint.strict import load_strict
from dimaskdino.modeling.backbone import ResNet
from dimaskdino.modeling.backbone.resnet import BASIC_DEPTHS, BLOCKS_PER_DEPTH, STAGES
from dimaskdino.modeling.model import ModelConfig

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


def _renamed(state: Mapping[str, torch.Tensor], rules: tuple) -> dict[str, torch.Tensor]:
    """``state`` with each key rewritten by every ``(pattern, replacement)`` of ``rules`` in
    turn (``re.sub``)."""
    out = {}
    for key, value in state.items():
        name = key
        for pattern, replacement in rules:
            name = re.sub(pattern, replacement, name)
        out[name] = value
    return out


def torchvision_to_detectron2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict to detectron2 names (classifier dropped)."""
    return _renamed({key: value for key, value in state.items() if not (
        key.startswith("fc.") or key.endswith("num_batches_tracked"))}, _TORCHVISION_RULES)


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
    return _renamed(state, _DETECTRON2_RULES)


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
        data = unpickle(path)
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
    data = unpickle(path) if path.suffix == ".pkl" else read_torch_file(path)
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
    load_strict(backbone.state_dict(), read_swin_weights(path), f"{path} does not fit the Swin "
                "backbone", may_miss=lambda key: re.match(r"norm\d\.", key) is not None,
                check=_check_window_offsets)


def _check_window_offsets(key: str, value: torch.Tensor, own: torch.Tensor) -> str | None:
    if key.endswith("relative_position_index") and not torch.equal(value, own):
        return f"{key} differs from the window's offsets"
    return None


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
    load_strict(own, weights, f"{path} does not fit the backbone",
                may_miss=lambda key: key.endswith(("running_mean", "running_var")))
    return layout
