"""Backbones: feature maps res2..res5 at strides 4..32."""

from dimaskdino.modeling.backbone.resnet import (
    Bottleneck,
    ConvNorm,
    FrozenBatchNorm2d,
    ResNet,
    ResNetConfig,
)

__all__ = ["Bottleneck", "ConvNorm", "FrozenBatchNorm2d", "ResNet", "ResNetConfig"]
