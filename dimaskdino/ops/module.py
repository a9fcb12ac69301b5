"""``MSDeformAttn``: the multi-scale deformable attention layer of Deformable DETR."""

from __future__ import annotations

import math

import torch
from torch import nn

from dimaskdino.ops.dispatch import Backend, cpu_float32, ms_deform_attn


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with learned sampling offsets and weights.

    Parameter names (``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj``) and initialisation follow Deformable DETR, so official
    MaskDINO / DI-MaskDINO state dicts load without renaming.

    Args:
        d_model: channels of queries and values; divisible by ``n_heads``.
        n_levels: feature levels ``L``.
        n_heads: attention heads ``M``.
        n_points: sampling points ``P`` per head and level.
        backend: passed to :func:`ms_deform_attn` (``None`` = automatic).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8,
                 n_points: int = 4, backend: Backend | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = (
            d_model, n_levels, n_heads, n_points)
        self.backend = backend
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation.

        Offsets start at zero weight with a bias that places head ``h``'s points on
        the ray at angle ``2 pi h / M``, point ``p`` at distance ``p + 1`` (in units
        of the level's pixels, the ray scaled so its larger coordinate is 1);
        attention weights start uniform (zero weight and bias); value and output
        projections are Xavier-uniform with zero bias.
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float64) * (2 * math.pi / self.n_heads)
        rays = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (M, 2)
        rays = rays / rays.abs().max(dim=-1, keepdim=True).values
        distance = torch.arange(1, self.n_points + 1, dtype=torch.float64)
        bias = rays[:, None, None, :] * distance[None, None, :, None]  # (M, 1, P, 2)
        bias = bias.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``query`` to the multi-scale tokens ``value``.

        Args:
            query: ``(N, Lq, C)``.
            reference_points: ``(N, Lq, L, 2)`` normalized ``(x, y)`` points, offsets
                measured in each level's pixels; or ``(N, Lq, L, 4)`` normalized
                ``(cx, cy, w, h)`` boxes, offsets measured in half box sizes / P.
            value: ``(N, S, C)`` flattened multi-scale tokens (``S = sum H_l W_l``).
            spatial_shapes: ``(L, 2)`` int64 ``(H_l, W_l)``.
            level_start_index: ``(L,)`` int64.
            padding_mask: ``(N, S)`` bool, True at padded tokens (they contribute zero).

        Returns:
            ``(N, Lq, C)``.
        """
        n, queries, _ = query.shape
        m, levels, p = self.n_heads, self.n_levels, self.n_points
        v = self.value_proj(value)
        if padding_mask is not None:
            v = v.masked_fill(padding_mask[..., None], 0.0)
        v = v.view(n, v.shape[1], m, self.d_model // m)
        # bf16 autocast on the CPU: locations and weights in fp32, as the kernel reads them
        offsets, weights = cpu_float32(self.sampling_offsets(query),
                                       self.attention_weights(query))
        offsets = offsets.view(n, queries, m, levels, p, 2)
        weights = weights.view(n, queries, m, levels * p).softmax(-1)
        weights = weights.view(n, queries, m, levels, p)
        if reference_points.shape[-1] == 2:
            normalizer = spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (W, H)
            locations = (reference_points[:, :, None, :, None, :]
                         + offsets / normalizer[None, None, None, :, None, :])
        elif reference_points.shape[-1] == 4:
            centers = reference_points[:, :, None, :, None, :2]
            sizes = reference_points[:, :, None, :, None, 2:]
            locations = centers + offsets / p * sizes * 0.5
        else:
            raise ValueError("reference_points must end in 2 or 4 coordinates, got "
                             f"{tuple(reference_points.shape)}")
        out = ms_deform_attn(v, spatial_shapes, level_start_index, locations, weights,
                             backend=self.backend)
        return self.output_proj(out)
