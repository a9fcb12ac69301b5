"""Box conversions and the mask-to-box rule that initialises decoder boxes."""

from __future__ import annotations

import torch

from dimaskdino.mask_boxes import masks_to_boxes_exclusive, masks_to_boxes_inclusive


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


# INITIALIZE_BOX_TYPE -> the mask-to-box rule
BOX_RULES = {"mask2box": masks_to_boxes_inclusive, "bitmask": masks_to_boxes_exclusive}


def mask_logits_to_boxes(mask_logits: torch.Tensor, rule: str = "mask2box") -> torch.Tensor:
    """Initial decoder boxes from mask logits, in inverse-sigmoid space.

    Args:
        mask_logits: ``(B, Q, H, W)`` at the mask-feature resolution.
        rule: ``mask2box`` (:func:`~dimaskdino.mask_boxes.masks_to_boxes_inclusive`) or
            ``bitmask`` (:func:`~dimaskdino.mask_boxes.masks_to_boxes_exclusive`).

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
