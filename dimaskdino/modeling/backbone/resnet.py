"""ResNet backbone in detectron2's layout (stem, res2..res5, FrozenBatchNorm).

Module and parameter names follow detectron2 (``stem.conv1``, ``res2.0.conv1.norm``,
``res2.0.shortcut``...), so official MaskDINO / DI-MaskDINO checkpoints load by key.
The stride of a stage's first block sits in the 3x3 convolution unless
``stride_in_1x1`` (the MSRA Caffe2 weights' convention) asks for the 1x1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dimaskdino.config_ranges import (
    RangeError,
    at_least,
    between,
    check_ranges,
    each,
    one_of,
    ranged,
)

BLOCKS_PER_DEPTH = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                    152: (3, 8, 36, 3)}
BASIC_DEPTHS = (18, 34)  # two 3x3 convolutions per block; deeper ResNets use bottlenecks
NORMS = ("FrozenBN", "GN")
STAGES = ("res2", "res3", "res4", "res5")
GN_GROUPS = 32
GN_WIDTH = f"a multiple of {GN_GROUPS} with norm GN (GroupNorm({GN_GROUPS}, C))"


@dataclass
class ResNetConfig:
    """detectron2's ``MODEL.RESNETS`` and ``MODEL.BACKBONE.FREEZE_AT``.

    ``norm``: ``FrozenBN`` (pretrained backbones, the official setting) or ``GN``
    (``GroupNorm(32, C)``, trainable: for backbones trained from scratch, as the tiny presets
    do). Depths 18 and 34 use basic blocks (``res2_out_channels`` = their width).
    """

    depth: int = ranged(50, one_of(*BLOCKS_PER_DEPTH))
    num_groups: int = ranged(1, at_least(1))
    width_per_group: int = ranged(64, at_least(1), note=f"num_groups x width_per_group: {GN_WIDTH}")
    stem_out_channels: int = ranged(64, at_least(1), note=GN_WIDTH)
    res2_out_channels: int = ranged(256, at_least(1), note=GN_WIDTH)
    stride_in_1x1: bool = False
    res5_dilation: int = ranged(1, one_of(1, 2))
    out_features: tuple[str, ...] = ranged(STAGES, each(one_of(*STAGES), min_len=1))
    freeze_at: int = ranged(0, between(0, 5))  # 0: nothing frozen, 1: the stem, k: res2..res<k>
    norm: str = ranged("FrozenBN", one_of(*NORMS))

    @classmethod
    def from_official(cls, model: dict) -> ResNetConfig:
        """From the ``MODEL`` section of an official detectron2 config (a parsed YAML dump)."""
        resnets, backbone = model.get("RESNETS", {}), model.get("BACKBONE", {})
        if backbone.get("NAME", "build_resnet_backbone") != "build_resnet_backbone":
            raise ValueError(f"backbone {backbone['NAME']!r} is not a ResNet")
        if any(resnets.get("DEFORM_ON_PER_STAGE", [])):
            raise ValueError("deformable-convolution ResNet stages are not supported")
        defaults = cls()
        return cls(
            depth=resnets.get("DEPTH", defaults.depth),
            num_groups=resnets.get("NUM_GROUPS", defaults.num_groups),
            width_per_group=resnets.get("WIDTH_PER_GROUP", defaults.width_per_group),
            stem_out_channels=resnets.get("STEM_OUT_CHANNELS", defaults.stem_out_channels),
            res2_out_channels=resnets.get("RES2_OUT_CHANNELS", defaults.res2_out_channels),
            stride_in_1x1=resnets.get("STRIDE_IN_1X1", defaults.stride_in_1x1),
            res5_dilation=resnets.get("RES5_DILATION", defaults.res5_dilation),
            out_features=tuple(resnets.get("OUT_FEATURES", defaults.out_features)),
            freeze_at=backbone.get("FREEZE_AT", defaults.freeze_at),
            norm=resnets.get("NORM", defaults.norm),
        )

    def output_shapes(self) -> tuple[dict[str, int], dict[str, int]]:
        """Channels and strides of every stage in ``out_features``."""
        channels, strides = {}, {}
        for index, name in enumerate(STAGES):
            if name in self.out_features:
                channels[name] = self.res2_out_channels * 2**index
                dilated = name == "res5" and self.res5_dilation == 2
                strides[name] = 4 * 2 ** (index - 1 if dilated else index)
        return channels, strides

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.norm != "GN":
            return
        widths = ["stem_out_channels", "res2_out_channels"]
        if self.depth not in BASIC_DEPTHS:
            widths.append("width_per_group")  # times num_groups: the bottleneck width
        for name in widths:
            value = getattr(self, name)
            channels = value * (self.num_groups if name == "width_per_group" else 1)
            if channels % GN_GROUPS:
                times = "such that num_groups x width_per_group is " \
                    if name == "width_per_group" else ""
                raise RangeError(ResNetConfig, name, value, f"{times}{GN_WIDTH}")


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (all buffers).

    Computes ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(N, C, H, W)`` -> same shape, in ``x``'s dtype (under bf16 autocast the
        statistics are read in bf16 too: the mixed-dtype kernel measured 1.6x slower)."""
        stats = [t.to(x.dtype) for t in (self.running_mean, self.running_var, self.weight,
                                         self.bias)]
        return F.batch_norm(x, *stats, training=False, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class ConvNorm(nn.Conv2d):
    """A bias-free convolution followed by ``self.norm`` (detectron2's ``Conv2d(norm=)``):
    FrozenBatchNorm by default, any ``norm(channels)`` module otherwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1,
                 norm: Callable[[int], nn.Module] = FrozenBatchNorm2d) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
                         groups=groups, bias=False)
        self.norm = norm(out_channels)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (detectron2's "GN")."""
    return nn.GroupNorm(GN_GROUPS, channels)


def _shortcut(in_channels: int, out_channels: int, stride: int,
              norm: Callable[[int], nn.Module]) -> ConvNorm | None:
    if in_channels == out_channels and stride == 1:
        return None
    return ConvNorm(in_channels, out_channels, 1, stride=stride, norm=norm)


class Stem(nn.Module):
    """7x7 stride-2 convolution, ReLU, 3x3 stride-2 max pool: stride 4."""

    def __init__(self, out_channels: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, out_channels, 7, stride=2, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with a projection shortcut where shapes change."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int,
                 stride: int, num_groups: int, stride_in_1x1: bool, dilation: int,
                 norm: Callable[[int], nn.Module] = FrozenBatchNorm2d) -> None:
        super().__init__()
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, stride=stride_1x1, norm=norm)
        self.conv2 = ConvNorm(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3,
                              dilation=dilation, groups=num_groups, norm=norm)
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34) with a projection shortcut where shapes change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilation: int,
                 norm: Callable[[int], nn.Module] = FrozenBatchNorm2d) -> None:
        super().__init__()
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = ConvNorm(in_channels, out_channels, 3, stride=stride, norm=norm)
        self.conv2 = ConvNorm(out_channels, out_channels, 3, dilation=dilation, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """ResNet returning the stages ``config.out_features`` as a dict.

    ``forward(images (N, 3, H, W))`` -> ``{"res2": (N, C2, H/4, W/4), "res3": (.., H/8, ..),
    "res4": (.., H/16, ..), "res5": (.., H/32, ..)}`` (H/16 for res5 when dilated), with
    ``C2 = res2_out_channels`` doubling per stage.
    """

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        norm = FrozenBatchNorm2d if config.norm == "FrozenBN" else group_norm
        self.stem = Stem(config.stem_out_channels, norm)
        in_channels = config.stem_out_channels
        out_channels = config.res2_out_channels
        bottleneck = config.num_groups * config.width_per_group
        last = max(STAGES.index(name) for name in config.out_features)
        self.stage_names: list[str] = []
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        stride_so_far = 4
        for index, (name, blocks) in enumerate(zip(STAGES, BLOCKS_PER_DEPTH[config.depth])):
            if index > last:
                break
            dilation = config.res5_dilation if name == "res5" else 1
            first_stride = 1 if index == 0 or dilation == 2 else 2
            stage = nn.Sequential(*[
                BasicBlock(in_channels if b == 0 else out_channels, out_channels,
                           first_stride if b == 0 else 1, dilation, norm)
                if config.depth in BASIC_DEPTHS else
                Bottleneck(in_channels if b == 0 else out_channels, out_channels, bottleneck,
                           first_stride if b == 0 else 1, config.num_groups,
                           config.stride_in_1x1, dilation, norm)
                for b in range(blocks)
            ])
            self.add_module(name, stage)
            self.stage_names.append(name)
            stride_so_far *= first_stride
            self.out_channels[name], self.strides[name] = out_channels, stride_so_far
            in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2
        self.freeze(config.freeze_at)

    def freeze(self, freeze_at: int) -> None:
        """Stop gradients into the stem (``freeze_at >= 1``) and res2.. (``>= 2``, ...)."""
        modules = [self.stem] + [getattr(self, name) for name in self.stage_names]
        for module in modules[:freeze_at]:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        out = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.config.out_features:
                out[name] = x
        return out
