"""The predictor's input for tests that start from encoder maps."""

from __future__ import annotations

import torch

from dimaskdino.modeling.levels import flatten_levels, level_positions


def encoded(maps: list[torch.Tensor], mask_features: torch.Tensor) -> dict:
    """:class:`~dimaskdino.modeling.encoder.MaskDINOEncoder`'s output dict for its output
    ``maps`` (encoder level order) and ``mask_features``."""
    memory, spatial_shapes, level_start_index = flatten_levels(maps)
    return {"multi_scale_features": maps, "mask_features": mask_features, "memory": memory,
            "positions": level_positions(maps), "spatial_shapes": spatial_shapes,
            "level_start_index": level_start_index}
