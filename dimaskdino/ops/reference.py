"""Pure-PyTorch multi-scale deformable attention (``grid_sample``), the reference backend.

It runs on any device and dtype and is differentiable through autograd, at the
cost of materialising every sample: (N * M, D, Lq, L * P) values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention with ``F.grid_sample``.

    Args:
        value: ``(N, S, M, D)``, ``S = sum_l H_l * W_l``, levels stacked in order.
        spatial_shapes: ``(L, 2)`` int64, ``(H_l, W_l)`` per level.
        level_start_index: ``(L,)`` int64, first token of each level in ``value``.
        sampling_locations: ``(N, Lq, M, L, P, 2)`` normalized ``(x, y)``.
        attention_weights: ``(N, Lq, M, L, P)``.

    Returns:
        ``(N, Lq, M * D)``.

    ``grid_sample`` with ``align_corners=False`` and zero padding maps ``x`` to the
    pixel coordinate ``x * W - 0.5``, the official op's convention.
    """
    n, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1
    samples = []
    for level, ((height, width), start) in enumerate(
        zip(spatial_shapes.tolist(), level_start_index.tolist())
    ):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        level_value = (
            value[:, start : start + height * width]
            .permute(0, 2, 3, 1)
            .reshape(n * heads, channels, height, width)
        )
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid = grids[:, :, :, level].transpose(1, 2).reshape(n * heads, queries, points, 2)
        samples.append(
            F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        )  # (N*M, D, Lq, P)
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, queries, levels * points)
    out = (torch.cat(samples, dim=-1) * weights).sum(-1)  # (N*M, D, Lq)
    return out.view(n, heads * channels, queries).transpose(1, 2).contiguous()
