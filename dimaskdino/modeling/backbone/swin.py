"""Swin Transformer (v1) backbone as the official MaskDINO ``D2SwinTransformer`` computes it.

Stages of shifted-window self-attention blocks at strides 4, 8, 16, 32, joined by patch
merging; each returned stage goes through its own LayerNorm (``norm0..norm3``) and comes out
as ``res2..res5`` (NCHW). Module and parameter names follow the official backbone (which
are the Swin repository's), so official checkpoints and ImageNet-22k weights load by key.

What matters for matching the official outputs (see the ``maskdino_swin_tiny`` fixture):

* a block pads its (LayerNorm-ed) map with zeros to a multiple of the window size *before*
  the cyclic shift, so padded zeros wrap into the shifted windows; padded tokens are never
  masked out as keys;
* the shift mask is built on the padded grid and uses -100 (not -inf) between regions;
* windows never shrink: a map smaller than the window is padded up to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dimaskdino.config_ranges import (
    DROP_RATE,
    PROBABILITY,
    RangeError,
    above,
    at_least,
    check_ranges,
    each,
    one_of,
    ranged,
)

STAGES = ("res2", "res3", "res4", "res5")
SHIFT_MASK_VALUE = -100.0


@dataclass
class SwinConfig:
    """The official ``MODEL.SWIN`` options; defaults are the official ones (Swin-T)."""

    embed_dim: int = ranged(96, at_least(1))
    # one entry per stage
    depths: tuple[int, ...] = ranged((2, 2, 6, 2), each(at_least(1), 4, exact=True))
    num_heads: tuple[int, ...] = ranged((3, 6, 12, 24), each(at_least(1), 4, exact=True),
                                        note="each divides its stage's embed_dim x 2^stage")
    window_size: int = ranged(7, at_least(1))
    patch_size: int = ranged(4, at_least(1))
    mlp_ratio: float = ranged(4.0, above(0))
    qkv_bias: bool = True
    qk_scale: float | None = ranged(None, above(0))  # None: head_dim ** -0.5
    drop_rate: float = ranged(0.0, DROP_RATE)
    attn_drop_rate: float = ranged(0.0, DROP_RATE)
    # stochastic depth, rising linearly over the blocks
    drop_path_rate: float = ranged(0.3, PROBABILITY)
    ape: bool = False                   # absolute position embedding ...
    pretrain_img_size: int = ranged(224, at_least(1))  # ... of this image size (resized)
    patch_norm: bool = True
    out_features: tuple[str, ...] = ranged(STAGES, each(one_of(*STAGES), min_len=1))
    use_checkpoint: bool = False        # gradient checkpointing of the blocks (memory only)

    def __post_init__(self) -> None:
        self.depths, self.num_heads = tuple(self.depths), tuple(self.num_heads)
        self.out_features = tuple(self.out_features)
        check_ranges(self)
        for index, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**index) % heads:
                raise RangeError(SwinConfig, "num_heads", self.num_heads,
                                 f"divisors of the stages' widths, embed_dim x 2^stage "
                                 f"({self.embed_dim * 2**index} for stage {index})")

    @classmethod
    def from_official(cls, model: dict) -> SwinConfig:
        """From the ``MODEL`` section of an official config (any ``MODEL.SWIN.*`` key)."""
        swin = dict(model.get("SWIN", {}))
        swin.pop("IN_CHANS", None)  # the official backbone always reads 3 channels
        names = {f.upper(): f for f in cls.__dataclass_fields__}
        unknown = sorted(set(swin) - set(names))
        if unknown:
            raise ValueError(f"MODEL.SWIN.{unknown[0]} is not a Swin option this toolkit "
                             "knows")
        return cls(**{names[key]: value for key, value in swin.items()})

    def output_shapes(self) -> tuple[dict[str, int], dict[str, int]]:
        """Channels and strides of every stage in ``out_features``."""
        channels, strides = {}, {}
        for index, name in enumerate(STAGES):
            if name in self.out_features:
                channels[name] = self.embed_dim * 2**index
                strides[name] = self.patch_size * 2**index
        return channels, strides


def relative_position_index(window: int) -> torch.Tensor:
    """``(W*W, W*W)`` int64: for tokens ``p``, ``q`` of a window (row-major), the row of the
    bias table holding their offset, ``(y_p - y_q + W - 1) * (2W - 1) + x_p - x_q + W - 1``."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` (multiples of ``window``) -> ``(B * nW, window**2, C)``, windows in
    row-major order per image."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window**2, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def shift_mask(height: int, width: int, window: int, shift: int, dtype: torch.dtype,
               device: torch.device) -> torch.Tensor:
    """The shifted windows' additive mask on a padded ``height x width`` grid, ``(nW, N,
    N)``: -100 between tokens of different regions (the grid's last ``window`` and last
    ``shift`` rows / columns start new regions), 0 within one."""
    regions = torch.zeros(1, height, width, 1, device=device)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for index, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
        regions[:, rows, cols] = index
    ids = window_partition(regions, window).squeeze(-1)
    different = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(different.shape, dtype=dtype, device=device).masked_fill(
        different, SHIFT_MASK_VALUE)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a residual branch per sample with probability ``rate``
    (scaling the kept ones by ``1 / (1 - rate)``); the identity in eval."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - rate)
    return x * keep / (1 - rate)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int, qkv_bias: bool,
                 qk_scale: float | None, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = qk_scale or (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # persistent, as in the official state dict (strict loading reads it back)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``windows (B * nW, N, C)``, ``mask (nW, N, N)`` additive or None -> same shape."""
        b, n, c = windows.shape
        qkv = self.qkv(windows).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            count = mask.shape[0]
            attn = attn.view(b // count, count, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.heads, n, n)
        attn = self.attn_drop(attn.softmax(-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with dropout after each."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention + MLP, both residual."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, config: SwinConfig,
                 drop_path_rate: float) -> None:
        super().__init__()
        self.window, self.shift, self.drop_path_rate = window, shift, drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads, config.qkv_bias, config.qk_scale,
                                    config.attn_drop_rate, config.drop_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), config.drop_rate)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, H, W, C)``; ``mask``: the stage's :func:`shift_mask` (used when shifted)."""
        height, width = x.shape[1:3]
        window = self.window
        # zero-pad right / bottom to window multiples, then shift the padded map
        y = F.pad(self.norm1(x), (0, 0, 0, -width % window, 0, -height % window))
        padded_h, padded_w = y.shape[1:3]
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, window), mask if self.shift else None)
        y = window_merge(y, window, padded_h, padded_w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + drop_path(y[:, :height, :width], self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class PatchMerging(nn.Module):
    """2x2 neighbourhoods concatenated (``(0,0), (1,0), (0,1), (1,1)``), LayerNorm, then a
    bias-free projection to twice the width: half the resolution."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H / 2), ceil(W / 2), 2C)``."""
        x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        x = torch.cat((x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]),
                      dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Blocks alternating unshifted / shifted windows, then (but the last stage) merging."""

    def __init__(self, dim: int, depth: int, heads: int, config: SwinConfig,
                 drop_path_rates: list[float], downsample: bool) -> None:
        super().__init__()
        window = config.window_size
        self.window, self.shift = window, window // 2
        self.use_checkpoint = config.use_checkpoint
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, 0 if index % 2 == 0 else self.shift, config,
                      drop_path_rates[index])
            for index in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, H, W, C)`` -> the stage's output (same shape) and the merged map."""
        height, width = x.shape[1:3]
        window = self.window
        mask = shift_mask(height + -height % window, width + -width % window, window,
                          self.shift, x.dtype, x.device)
        for block in self.blocks:
            if self.use_checkpoint and self.training:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return x, None if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution (after zero-padding right / bottom to a
    multiple of the patch), then LayerNorm over channels."""

    def __init__(self, patch: int, dim: int, norm: bool) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, H / patch, W / patch, C)`` (rounded up)."""
        height, width = images.shape[-2:]
        images = F.pad(images, (0, -width % self.patch, 0, -height % self.patch))
        x = self.proj(images).permute(0, 2, 3, 1)
        return x if self.norm is None else self.norm(x)


class SwinTransformer(nn.Module):
    """Swin returning the stages ``config.out_features`` as a dict.

    ``forward(images (N, 3, H, W))`` -> ``{"res2": (N, C, H/4, W/4), "res3": (N, 2C, H/8,
    W/8), "res4": (.., H/16, ..), "res5": (N, 8C, H/32, W/32)}`` (``C = embed_dim``; sizes
    rounded up), each normalized by its ``norm<i>``.
    """

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, dim, config.patch_norm)
        if config.ape:
            side = config.pretrain_img_size // config.patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, dim, side, side))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(config.drop_rate)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths)).tolist()
        self.layers = nn.ModuleList()
        for index, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
            start = sum(config.depths[:index])
            self.layers.append(SwinStage(dim * 2**index, depth, heads, config,
                                         rates[start:start + depth],
                                         downsample=index < len(STAGES) - 1))
        for index in range(len(STAGES)):  # the official model keeps all four norms
            self.add_module(f"norm{index}", nn.LayerNorm(dim * 2**index))
        self.out_channels, self.strides = config.output_shapes()

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.patch_embed(images)
        if self.config.ape:
            embed = F.interpolate(self.absolute_pos_embed, size=x.shape[1:3], mode="bicubic")
            x = x + embed.permute(0, 2, 3, 1)
        x = self.pos_drop(x)
        out = {}
        last = max(STAGES.index(name) for name in self.config.out_features)
        for index, stage in enumerate(self.layers[:last + 1]):
            stage_out, x = stage(x)
            name = STAGES[index]
            if name in self.config.out_features:
                normed = getattr(self, f"norm{index}")(stage_out)
                out[name] = normed.permute(0, 3, 1, 2).contiguous()
        return out
