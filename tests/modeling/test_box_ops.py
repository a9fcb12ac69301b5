"""Box helpers against direct definitions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dimaskdino.modeling.box_ops import (
    box_cxcywh_to_xyxy,
    box_xyxy_to_cxcywh,
    inverse_sigmoid,
    mask_logits_to_boxes,
)
from dimaskdino.ops.masks import resize_masks


def test_a_full_mask_gives_the_whole_image_under_bitmask():
    logits = torch.ones(1, 2, 4, 8, dtype=torch.float64)
    logits[0, 1] = -1  # empty: inverse_sigmoid(0) in every coordinate
    boxes = mask_logits_to_boxes(logits, "bitmask").sigmoid()
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.5, 0.5, 1.0, 1.0],
                                                         dtype=torch.float64),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(boxes[0, 1], torch.full((4,), 1e-5, dtype=torch.float64),
                               rtol=0, atol=1e-9)


def test_box_conversions_round_trip_and_inverse_sigmoid():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.05, 0.1]], dtype=torch.float64)
    torch.testing.assert_close(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes)
    x = torch.tensor([0.0, 0.25, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(inverse_sigmoid(x).sigmoid()[1], x[1])
    assert inverse_sigmoid(x)[0] == torch.log(torch.tensor(1e-5, dtype=torch.float64))


def test_resize_masks_same_size_shortcut_equals_full_resize():
    masks = torch.randn(3, 8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = resize_masks(masks, (32, 40), (30, 37), (30, 37))
    full = F.interpolate(masks[None], size=(32, 40), mode="bilinear", align_corners=False)
    full = F.interpolate(full[..., :30, :37], size=(30, 37), mode="bilinear",
                         align_corners=False)[0]
    assert torch.equal(got, full)
