"""Box conversions and the mask-to-box rule that initialises decoder boxes."""

from __future__ import annotations

import torch


def box_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype boxes are computed in: float32 at least (a bf16 box would be off by up to
    1/256 of the image; under bf16 autocast every box refinement stays fp32 through this)."""
    return torch.promote_types(dtype, torch.float32)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``log(x / (1 - x))`` with ``x`` clamped to ``[0, 1]`` and both terms to ``>= eps``, in
    :func:`box_dtype`."""
    x = x.to(box_dtype(x.dtype)).clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` corners ``(x0, y0, x1, y1)`` -> ``(cx, cy, w, h)``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` ``(cx, cy, w, h)`` -> corners ``(x0, y0, x1, y1)``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


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


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
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


def bitmask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Pixel-edge boxes of boolean masks (the official ``bitmask``: detectron2's
    ``BitMasks.get_bounding_boxes``).

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


BOX_RULES = {"mask2box": masks_to_boxes, "bitmask": bitmask_boxes}


def mask_logits_to_boxes(mask_logits: torch.Tensor, rule: str = "mask2box") -> torch.Tensor:
    """Initial decoder boxes from mask logits, in inverse-sigmoid space.

    Args:
        mask_logits: ``(B, Q, H, W)`` at the mask-feature resolution.
        rule: ``mask2box`` (:func:`masks_to_boxes`) or ``bitmask`` (:func:`bitmask_boxes`).

    Returns:
        ``(B, Q, 4)``: ``inverse_sigmoid`` of the normalized ``(cx, cy, w, h)`` of
        ``mask_logits > 0`` (pixel coordinates divided by ``W`` / ``H``), in
        :func:`box_dtype` of the logits' dtype.
    """
    batch, queries, height, width = mask_logits.shape
    dtype = box_dtype(mask_logits.dtype)
    boxes = BOX_RULES[rule](mask_logits.detach().flatten(0, 1) > 0).to(dtype)
    scale = torch.tensor([width, height, width, height], dtype=dtype,
                         device=mask_logits.device)
    boxes = box_xyxy_to_cxcywh(boxes) / scale
    return inverse_sigmoid(boxes.reshape(batch, queries, 4))
