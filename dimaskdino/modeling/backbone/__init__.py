"""Backbones: feature maps res2..res5 at strides 4..32."""

from dimaskdino.modeling.backbone.resnet import (
    BasicBlock,
    Bottleneck,
    ConvNorm,
    FrozenBatchNorm2d,
    ResNet,
    ResNetConfig,
    group_norm,
)

__all__ = ["BasicBlock", "Bottleneck", "ConvNorm", "FrozenBatchNorm2d", "ResNet", "ResNetConfig",
           "group_norm"]
