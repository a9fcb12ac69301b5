"""Backbones: feature maps res2..res5 at strides 4..32 (a detectron2-layout ResNet or the
official Swin Transformer)."""

from __future__ import annotations

from torch import nn

from dimaskdino.modeling.backbone.resnet import (
    BasicBlock,
    Bottleneck,
    ConvNorm,
    FrozenBatchNorm2d,
    ResNet,
    ResNetConfig,
    group_norm,
)
from dimaskdino.modeling.backbone.swin import SwinConfig, SwinTransformer

BackboneConfig = ResNetConfig | SwinConfig
# the official MODEL.BACKBONE.NAME of each backbone
OFFICIAL_BACKBONES = {"build_resnet_backbone": ResNetConfig, "D2SwinTransformer": SwinConfig}


def backbone_from_official(model: dict) -> BackboneConfig:
    """The backbone an official config's ``MODEL`` section names (``BACKBONE.NAME``)."""
    name = model.get("BACKBONE", {}).get("NAME", "build_resnet_backbone")
    if name not in OFFICIAL_BACKBONES:
        raise ValueError(f"MODEL.BACKBONE.NAME {name!r} is not supported; choose one of "
                         f"{', '.join(OFFICIAL_BACKBONES)}")
    return OFFICIAL_BACKBONES[name].from_official(model)


def build_backbone(config: BackboneConfig) -> nn.Module:
    """The backbone module of ``config``."""
    return SwinTransformer(config) if isinstance(config, SwinConfig) else ResNet(config)


__all__ = [
    "OFFICIAL_BACKBONES",
    "BackboneConfig",
    "BasicBlock",
    "Bottleneck",
    "ConvNorm",
    "FrozenBatchNorm2d",
    "ResNet",
    "ResNetConfig",
    "SwinConfig",
    "SwinTransformer",
    "backbone_from_official",
    "build_backbone",
    "group_norm",
]
