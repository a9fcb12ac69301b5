"""Boxes of boolean masks, in the two conventions the toolkit meets.

* :func:`masks_to_boxes_inclusive`: the first and last occupied pixel index (the official
  ``mask2box`` that initialises DI-MaskDINO's decoder boxes; an empty mask gives
  ``(1e8, 1e8, 0, 0)``);
* :func:`masks_to_boxes_exclusive`: pixel edges, one past the last occupied pixel
  (detectron2's ``BitMasks.get_bounding_boxes``: the training targets' boxes and the
  official ``bitmask`` box initialisation; an empty mask gives zeros).

Outside ``modeling`` so that ``data`` uses them without importing the model.
"""

from __future__ import annotations

import torch


def _extents(masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """First and last occupied column and row of ``(N, H, W)`` bool masks (float32), and
    which masks are empty."""
    def extent(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # first and last occupied index along the last dim of (N, L) bools
        length = occupied.shape[-1]
        first = occupied.to(torch.uint8).argmax(-1)
        last = length - 1 - occupied.flip(-1).to(torch.uint8).argmax(-1)
        return first.float(), last.float()

    cols, rows = masks.any(dim=1), masks.any(dim=2)
    x_min, x_max = extent(cols)
    y_min, y_max = extent(rows)
    return x_min, y_min, x_max, y_max, ~cols.any(-1)


def masks_to_boxes_inclusive(masks: torch.Tensor) -> torch.Tensor:
    """Tight pixel-index boxes of boolean masks (the official ``mask2box``).

    Args:
        masks: ``(N, H, W)`` bool.

    Returns:
        ``(N, 4)`` ``(x_min, y_min, x_max, y_max)`` as the min / max column and row index of
        the mask's pixels (inclusive, no +1), in float32. An empty mask gives
        ``(1e8, 1e8, 0, 0)``, as in the official code.
    """
    if masks.numel() == 0:
        return torch.zeros((0, 4), device=masks.device)
    x_min, y_min, x_max, y_max, empty = _extents(masks)
    boxes = torch.stack((x_min, y_min, x_max, y_max), dim=1)
    return torch.where(empty[:, None], torch.tensor([1e8, 1e8, 0.0, 0.0], device=masks.device),
                       boxes)


def masks_to_boxes_exclusive(masks: torch.Tensor) -> torch.Tensor:
    """Pixel-edge boxes of boolean masks (detectron2's ``BitMasks.get_bounding_boxes``, the
    official ``bitmask``).

    Args:
        masks: ``(N, H, W)`` bool.

    Returns:
        ``(N, 4)`` ``(x_min, y_min, x_max + 1, y_max + 1)`` of the first and last occupied
        column and row (exclusive right / bottom edge), float32; an empty mask gives zeros.
    """
    if masks.numel() == 0:
        return torch.zeros((0, 4), device=masks.device)
    x_min, y_min, x_max, y_max, empty = _extents(masks)
    boxes = torch.stack((x_min, y_min, x_max + 1, y_max + 1), dim=1)
    return boxes.masked_fill(empty[:, None], 0.0)
