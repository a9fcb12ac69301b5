"""Sine position embeddings of feature maps (DETR / Mask2Former style)."""

from __future__ import annotations

import math

import torch


def sine_position_embedding(batch: int, height: int, width: int, channels: int,
                            dtype: torch.dtype = torch.float32,
                            device: torch.device | str | None = None,
                            temperature: float = 10000.0) -> torch.Tensor:
    """Normalized 2-D sine embedding of an unpadded ``height x width`` map.

    Row and column positions ``1..H`` / ``1..W`` are scaled to ``(0, 2 pi]`` (divided by
    ``H + 1e-6`` / ``W + 1e-6``), divided by ``temperature ** (2 floor(i / 2) / (C / 2))``
    and turned into interleaved sin/cos pairs; the ``y`` half comes first.

    Returns:
        ``(batch, channels, height, width)`` in ``dtype``.
    """
    if channels % 2:
        raise ValueError(f"position embedding channels must be even, got {channels}")
    feats = channels // 2
    ones = torch.ones(batch, height, width, dtype=dtype, device=device)
    y = ones.cumsum(1)
    x = ones.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * (2 * math.pi)
    x = x / (x[:, :, -1:] + 1e-6) * (2 * math.pi)
    freq = torch.arange(feats, dtype=dtype, device=device)
    freq = temperature ** (2 * (freq // 2) / feats)

    def interleave(angles: torch.Tensor) -> torch.Tensor:  # (B, H, W, feats)
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=4).flatten(3)

    pos = torch.cat((interleave(y[..., None] / freq), interleave(x[..., None] / freq)), dim=3)
    return pos.permute(0, 3, 1, 2)


def sine_box_embedding(boxes: torch.Tensor, dim: int, temperature: float = 10000.0
                       ) -> torch.Tensor:
    """Sine embedding of normalized boxes, the decoder's query positions.

    Each coordinate, times ``2 pi``, is divided by ``temperature ** (2 floor(i / 2) /
    (dim / 2))`` for ``i < dim / 2`` and turned into interleaved sin/cos; blocks are
    concatenated as ``(y, x, w, h)`` (``(y, x)`` for points).

    Args:
        boxes: ``(..., 4)`` ``(cx, cy, w, h)`` or ``(..., 2)`` points.
        dim: the model width; each block is ``dim / 2`` wide.

    Returns:
        ``(..., 2 * dim)`` for boxes, ``(..., dim)`` for points.
    """
    feats = dim // 2
    freq = torch.arange(feats, dtype=boxes.dtype, device=boxes.device)
    freq = temperature ** (2 * (freq // 2) / feats)

    def embed(coord: torch.Tensor) -> torch.Tensor:
        angles = (coord * (2 * math.pi))[..., None] / freq
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()),
                           dim=-1).flatten(-2)

    order = (1, 0, 2, 3) if boxes.shape[-1] == 4 else (1, 0)
    return torch.cat([embed(boxes[..., i]) for i in order], dim=-1)
