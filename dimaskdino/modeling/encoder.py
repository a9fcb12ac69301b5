"""The MaskDINO encoder (the pixel decoder of the segmentation literature).

Backbone maps (res3..res5, or res2..res5) are projected to ``conv_dim`` channels (1x1 conv +
GroupNorm), extra levels, if any, are made by 3x3 stride-2 convolutions from the coarsest
one, and deformable self-attention layers refine all tokens together. The finest output is
then fused FPN-style with res2 into the stride-4 ``mask_features`` that every mask is
predicted from.

``feature_order`` is the official ``FEATURE_ORDER``; it sets the encoder's level order (the
name says little; the official code's arithmetic, with strides for res3..res5 + 2 extras):

* ``low2high``: the backbone levels fine to coarse, then the extras coarsest first
  (``[8, 16, 32, 128, 64]``); ``input_proj.<i>`` projects the i-th finest backbone level;
* ``high2low``: the extras coarsest first, then the backbone levels coarse to fine
  (``[128, 64, 32, 16, 8]``); ``input_proj.<i>`` projects the i-th coarsest backbone level.

The extras are ``input_proj.<n>``, ``input_proj.<n+1>``... (stride 64 first) in both orders;
level embeddings and the attention's level axis follow the encoder order.

With two or more extras the official encoder lists their sine positions as it builds them
(stride 64 first) although their maps go in coarsest first, and adds the positions to the
tokens row by row: the extras' tokens get position rows of other levels (high2low with
strides ``[128, 64, ...]``: the stride-128 tokens get the first rows of the stride-64
embedding). :func:`official_position_levels` reproduces that pairing; the ``positions``
returned per level stay each level's own.

Module names follow the official ``sem_seg_head.pixel_decoder`` so its weights load by key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dimaskdino.config_ranges import (
    DROP_RATE,
    Described,
    RangeError,
    at_least,
    check_ranges,
    each,
    one_of,
    ranged,
)
from dimaskdino.modeling.backbone import ConvNorm, group_norm
from dimaskdino.modeling.backbone.resnet import GN_GROUPS, STAGES
from dimaskdino.modeling.levels import flatten_levels, level_positions, pixel_centres
from dimaskdino.modeling.post_norm import PostNormLayer
from dimaskdino.ops import MSDeformAttn

FEATURE_ORDERS = ("low2high", "high2low")
BACKBONES = Described("set from the backbone's outputs")


@dataclass
class EncoderConfig:
    """The official ``SEM_SEG_HEAD`` encoder options (and ``MaskDINO.NHEADS`` / ``DROPOUT``);
    defaults are the paper's R50 models."""

    in_channels: dict[str, int] = ranged(valid=BACKBONES)  # channels of res2..res5
    in_strides: dict[str, int] = ranged(valid=BACKBONES)   # strides of res2..res5
    # GroupNorm(32, conv_dim) after every projection; the attention's heads divide it
    conv_dim: int = ranged(256, at_least(GN_GROUPS, multiple=GN_GROUPS))
    mask_dim: int = ranged(256, at_least(1))
    layers: int = ranged(6, at_least(0))
    heads: int = ranged(8, at_least(1), note="a divisor of conv_dim")
    points: int = ranged(4, at_least(1))
    dim_feedforward: int = ranged(2048, at_least(1))
    dropout: float = ranged(0.0, DROP_RATE)
    transformer_in_features: tuple[str, ...] = ranged(
        ("res3", "res4", "res5"), each(one_of(*STAGES), min_len=1),
        note="among model.backbone.out_features")
    total_levels: int = ranged(4, at_least(1), note="at least len(transformer_in_features)")
    common_stride: int = ranged(4, one_of(4))  # the stride of mask_features: res2's
    feature_order: str = ranged("low2high", one_of(*FEATURE_ORDERS))

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.total_levels < len(self.transformer_in_features):
            raise RangeError(EncoderConfig, "total_levels", self.total_levels,
                             f">= the {len(self.transformer_in_features)} "
                             "transformer_in_features")
        if self.conv_dim % self.heads:
            raise RangeError(EncoderConfig, "heads", self.heads,
                             f"a divisor of conv_dim ({self.conv_dim})")

    @classmethod
    def from_official(cls, model: dict, in_channels: dict[str, int],
                      in_strides: dict[str, int]) -> EncoderConfig:
        """From the ``MODEL`` section of an official config and the backbone's shapes."""
        head, maskdino = model["SEM_SEG_HEAD"], model["MaskDINO"]
        if head.get("PIXEL_DECODER_NAME", "MaskDINOEncoder") != "MaskDINOEncoder":
            raise ValueError(f"pixel decoder {head['PIXEL_DECODER_NAME']!r} is not supported")
        if head.get("NORM", "GN") != "GN":
            raise ValueError(f"SEM_SEG_HEAD.NORM {head['NORM']!r} is not supported (only GN)")
        used = [f for f in head.get("IN_FEATURES", list(in_channels)) if f in in_channels]
        return cls(
            in_channels={f: in_channels[f] for f in used},
            in_strides={f: in_strides[f] for f in used},
            conv_dim=head["CONVS_DIM"],
            mask_dim=head["MASK_DIM"],
            layers=head["TRANSFORMER_ENC_LAYERS"],
            heads=maskdino["NHEADS"],  # the official encoder reads these, not SEM_SEG_HEAD's
            dim_feedforward=head["DIM_FEEDFORWARD"],
            dropout=maskdino.get("DROPOUT", 0.0),
            transformer_in_features=tuple(head["DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES"]),
            total_levels=head["TOTAL_NUM_FEATURE_LEVELS"],
            common_stride=head["COMMON_STRIDE"],
            feature_order=head.get("FEATURE_ORDER", "high2low"),
        )


def input_projection(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
            ) -> nn.Sequential:
    """Convolution with bias, then GroupNorm(32): the official ``input_proj`` entries."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                  padding=kernel_size // 2),
        nn.GroupNorm(32, out_channels),
    )


def conv_gn(in_channels: int, out_channels: int, kernel_size: int) -> ConvNorm:
    """Bias-free convolution + ``norm`` = GroupNorm(32) (detectron2 naming)."""
    return ConvNorm(in_channels, out_channels, kernel_size, norm=group_norm)


class EncoderLayer(PostNormLayer):
    """Post-norm deformable self-attention (``norm1``) + FFN (``norm2``) over all tokens of
    all levels."""

    def __init__(self, dim: int, dim_feedforward: int, dropout: float, levels: int,
                 heads: int, points: int) -> None:
        super().__init__(dim, dim_feedforward, dropout,
                         {"self_attn": MSDeformAttn(dim, levels, heads, points)})

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor) -> torch.Tensor:
        """``src``, ``pos`` ``(B, S, C)``, ``reference_points`` ``(B, S, L, 2)``: ``(B, S, C)``."""
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes,
                                  level_start_index)
        return self.ffn(self.add_norm(src, attended, self.norm1))


class DeformableEncoder(nn.Module):
    """Level embeddings + a stack of :class:`EncoderLayer` (official ``transformer``)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        dim = config.conv_dim
        self.level_embed = nn.Parameter(torch.empty(config.total_levels, dim))
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            EncoderLayer(dim, config.dim_feedforward, config.dropout, config.total_levels,
                         config.heads, config.points)
            for _ in range(config.layers)
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for layer in self.encoder.layers:
            layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, maps: list[torch.Tensor], position_levels: list[int]
                ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Encode maps ``(B, C, H_l, W_l)`` (no padding masks, as the official model runs).

        ``position_levels[l]`` is the level whose sine positions the official code lists
        l-th (:func:`official_position_levels`); the listed positions, each plus
        ``level_embed[l]``, are added to the tokens row by row.

        Returns ``memory (B, S, C)``, the levels' own sine positions (:func:`level_positions`,
        without level embeddings), ``spatial_shapes (L, 2)``, ``level_start_index (L,)``.
        """
        memory, spatial_shapes, level_start_index = flatten_levels(maps)
        positions = level_positions(maps)
        pos = torch.cat([positions[source] + self.level_embed[level]
                         for level, source in enumerate(position_levels)], dim=1)
        pos = pos.to(memory.dtype)  # bf16 autocast: queries of the tokens' dtype, no casts
        # every token looks from its own pixel centre on every level (valid ratios are 1)
        reference_points = pixel_centres(spatial_shapes.tolist(),  # fp32 under bf16 autocast
                                         torch.promote_types(memory.dtype, torch.float32),
                                         memory.device)[None, :, None, :]
        reference_points = reference_points.expand(memory.shape[0], -1, len(maps), 2)
        for layer in self.encoder.layers:
            memory = layer(memory, pos, reference_points, spatial_shapes, level_start_index)
        return memory, positions, spatial_shapes, level_start_index


def official_position_levels(backbone_levels: int, extra_levels: int, low2high: bool
                             ) -> list[int]:
    """Per slot of the official encoder's position list, the encoder level whose sine
    positions it holds: the level order with the extras' block reversed (their positions
    are listed as built, finest first, their maps coarsest first). The identity with fewer
    than two extras."""
    levels = list(range(backbone_levels + extra_levels))
    extras = slice(backbone_levels, None) if low2high else slice(0, extra_levels)
    levels[extras] = levels[extras][::-1]
    return levels


class MaskDINOEncoder(nn.Module):
    """Multi-scale deformable encoder with the stride-4 mask-feature branch.

    ``forward(features)`` with ``features[name]`` ``(B, C_name, H_name, W_name)`` for res2..res5
    returns a dict:

    * ``multi_scale_features``: ``total_levels`` maps ``(B, conv_dim, H_l, W_l)`` in the
      encoder's level order (see the module docstring; the R50 ``low2high`` configs: strides
      8, 16, 32, 64);
    * ``mask_features``: ``(B, mask_dim, H/4, W/4)``;
    * ``memory``: ``(B, S, conv_dim)`` the encoder tokens in the same level order;
    * ``positions``: per level the sine position embedding of its tokens ``(B, H_l * W_l,
      conv_dim)`` (without level embedding; BATO's token positions);
    * ``spatial_shapes`` ``(L, 2)`` and ``level_start_index`` ``(L,)`` of ``memory``.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.conv_dim
        # the backbone levels in input_proj order, then the extra downsampled ones
        fine_to_coarse = sorted(config.transformer_in_features,
                                key=config.in_strides.__getitem__)
        self.low2high = config.feature_order == "low2high"
        self.levels = fine_to_coarse if self.low2high else fine_to_coarse[::-1]
        self.coarsest = fine_to_coarse[-1]
        projections = [input_projection(config.in_channels[name], dim, 1) for name in self.levels]
        in_channels = config.in_channels[self.coarsest]
        for _ in range(config.total_levels - len(self.levels)):
            projections.append(input_projection(in_channels, dim, 3, stride=2))
            in_channels = dim
        self.input_proj = nn.ModuleList(projections)
        self.position_levels = official_position_levels(
            len(self.levels), config.total_levels - len(self.levels), self.low2high)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        self.transformer = DeformableEncoder(config)
        self.mask_features = nn.Conv2d(dim, config.mask_dim, 1)
        # FPN levels between the encoder's finest stride and common_stride (res2 for 8 -> 4)
        finest = min(config.in_strides[name] for name in self.levels)
        # where the finest backbone level sits in the encoder order
        self.finest_index = 0 if self.low2high else config.total_levels - 1
        fpn_count = max(int(math.log2(finest) - math.log2(config.common_stride)), 1)
        by_stride = sorted(config.in_channels, key=config.in_strides.__getitem__)
        self.fpn_features = by_stride[:fpn_count]
        for index, name in enumerate(self.fpn_features, start=1):
            setattr(self, f"adapter_{index}", conv_gn(config.in_channels[name], dim, 1))
            setattr(self, f"layer_{index}", conv_gn(dim, dim, 3))
        for conv in [self.mask_features] + [getattr(self, f"{kind}_{i}") for i in
                                            range(1, fpn_count + 1)
                                            for kind in ("adapter", "layer")]:
            nn.init.kaiming_uniform_(conv.weight, a=1)  # detectron2's c2_xavier_fill
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, features: dict[str, torch.Tensor]) -> dict:
        maps = [proj(features[name]) for proj, name in zip(self.input_proj, self.levels)]
        extra, extras = features[self.coarsest], []
        for proj in self.input_proj[len(self.levels):]:
            extra = proj(extra)
            extras.insert(0, extra)  # coarsest first
        maps = maps + extras if self.low2high else extras + maps
        memory, positions, spatial_shapes, level_start_index = self.transformer(
            maps, self.position_levels)
        batch, dim = memory.shape[0], memory.shape[-1]
        outputs = [
            tokens.transpose(1, 2).reshape(batch, dim, int(h), int(w))
            for tokens, (h, w) in zip(memory.split(spatial_shapes.prod(1).tolist(), dim=1),
                                      spatial_shapes.tolist())
        ]
        for index in range(len(self.fpn_features), 0, -1):  # coarse to fine
            # as the official code does, every FPN level upsamples the finest encoder map
            lateral = getattr(self, f"adapter_{index}")(features[self.fpn_features[index - 1]])
            fused = lateral + F.interpolate(outputs[self.finest_index],
                                            size=lateral.shape[-2:],
                                            mode="bilinear", align_corners=False)
            fused = F.relu(getattr(self, f"layer_{index}")(fused))
        return {
            "multi_scale_features": outputs,
            "mask_features": self.mask_features(fused),
            "memory": memory,
            "positions": positions,
            "spatial_shapes": spatial_shapes,
            "level_start_index": level_start_index,
        }
