"""Checkpoints, one idea per module:

- :mod:`~dimaskdino.checkpoint.files`: reading weight files safely, :class:`CheckpointError`;
- :mod:`~dimaskdino.checkpoint.strict`: the strict loading every file goes through;
- :mod:`~dimaskdino.checkpoint.backbones`: ImageNet ResNet and Swin weights;
- :mod:`~dimaskdino.checkpoint.official`: official MaskDINO / DI-MaskDINO checkpoints
  (their key map);
- :mod:`~dimaskdino.checkpoint.dimask`: dimask's training checkpoints, and
  :func:`load_model` for either kind.

Their public names are importable from here (``from dimaskdino.checkpoint import
load_official``).
"""

from dimaskdino.checkpoint.backbones import (
    CAFFE2,
    LAYOUT_INPUT,
    TORCHVISION,
    caffe2_to_detectron2,
    caffe2_to_rgb,
    check_backbone_layout,
    detectron2_to_torchvision,
    load_backbone_weights,
    load_swin_weights,
    read_backbone_weights,
    read_swin_weights,
    resnet_name,
    torchvision_to_detectron2,
)
from dimaskdino.checkpoint.dimask import (
    TRAINING_FORMAT,
    checked_checkpoint,
    load_model,
    load_weights,
)
from dimaskdino.checkpoint.files import CheckpointError, read_torch_file, unpickle
from dimaskdino.checkpoint.official import (
    convert_official_state_dict,
    is_official_checkpoint,
    load_official,
    read_official_weights,
)
from dimaskdino.checkpoint.strict import load_strict

__all__ = [
    "CAFFE2", "LAYOUT_INPUT", "TORCHVISION", "TRAINING_FORMAT", "CheckpointError",
    "caffe2_to_detectron2", "caffe2_to_rgb", "check_backbone_layout", "checked_checkpoint",
    "convert_official_state_dict", "detectron2_to_torchvision", "is_official_checkpoint",
    "load_backbone_weights", "load_model", "load_official", "load_strict",
    "load_swin_weights", "load_weights", "read_backbone_weights", "read_official_weights",
    "read_swin_weights", "read_torch_file", "resnet_name", "torchvision_to_detectron2",
    "unpickle",
]
