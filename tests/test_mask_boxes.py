"""Mask-to-box conventions against a direct scan of the pixels."""

from __future__ import annotations

import torch

from dimaskdino.mask_boxes import masks_to_boxes_exclusive, masks_to_boxes_inclusive


def test_inclusive_boxes_are_the_pixel_index_extent_and_1e8_for_empty_masks():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(20, 13, 17, generator=g) > 0.97
    masks[3] = False  # an empty mask
    got = masks_to_boxes_inclusive(masks)
    for mask, box in zip(masks, got, strict=True):
        ys, xs = mask.nonzero(as_tuple=True)
        if len(xs) == 0:
            want = torch.tensor([1e8, 1e8, 0.0, 0.0])
        else:
            want = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32)
        assert torch.equal(box, want)
    assert got.dtype == torch.float32


def test_exclusive_boxes_have_exclusive_far_edges_and_zero_for_empty_masks():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(20, 13, 17, generator=g) > 0.97
    masks[5] = False
    got = masks_to_boxes_exclusive(masks)
    for mask, box in zip(masks, got, strict=True):
        ys, xs = mask.nonzero(as_tuple=True)
        if len(xs) == 0:
            want = torch.zeros(4)
        else:
            want = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                                dtype=torch.float32)
        assert torch.equal(box, want)


def test_no_masks_give_no_boxes():
    for boxes in (masks_to_boxes_inclusive, masks_to_boxes_exclusive):
        assert boxes(torch.zeros(0, 5, 7, dtype=torch.bool)).shape == (0, 4)
