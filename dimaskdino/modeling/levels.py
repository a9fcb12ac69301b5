"""Multi-scale feature maps as one token sequence: flattening, positions, pixel centres."""

from __future__ import annotations

import torch

from dimaskdino.modeling.position import sine_position_embedding


def flatten_levels(maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten maps ``(B, C, H_l, W_l)`` into ``(B, S, C)`` tokens with their shapes ``(L, 2)``
    and level offsets ``(L,)``, in the given order."""
    spatial_shapes = torch.tensor([m.shape[-2:] for m in maps], dtype=torch.long,
                                  device=maps[0].device)
    tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
    return tokens, spatial_shapes, start_indices(spatial_shapes)


def start_indices(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """Offsets ``(L,)`` of the levels of ``(H, W)`` ``spatial_shapes (L, 2)`` in their token
    sequence."""
    return torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))


def reverse_levels(tokens: torch.Tensor, spatial_shapes: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The levels of ``tokens (B, S, C)`` last to first: the reordered tokens, their shapes
    ``(L, 2)`` and level offsets ``(L,)`` (the decoder reads the encoder's levels in this
    order, as the official one flattens them)."""
    levels = tokens.split(spatial_shapes.prod(1).tolist(), dim=1)
    reversed_shapes = spatial_shapes.flip(0)
    return torch.cat(levels[::-1], dim=1), reversed_shapes, start_indices(reversed_shapes)


def level_positions(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per map, the sine position embedding of its tokens, ``(B, H_l * W_l, C)``."""
    return [sine_position_embedding(m.shape[0], m.shape[-2], m.shape[-1], m.shape[1],
                                    dtype=m.dtype, device=m.device).flatten(2).transpose(1, 2)
            for m in maps]


def pixel_centres(shapes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device
                  ) -> torch.Tensor:
    """Normalized ``(x, y)`` pixel centres ``((j + 0.5) / W, (i + 0.5) / H)`` of the tokens
    of levels of ``(H, W)`` ``shapes``, ``(S, 2)``."""
    centres = []
    for height, width in shapes:
        ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) / height
        xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        centres.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1))
    return torch.cat(centres)
