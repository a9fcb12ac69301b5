"""LSJ and test-time resizing: geometry, determinism, box recomputation."""

from __future__ import annotations

import torch

from dimaskdino.data.transforms import (
    PAD_VALUE,
    LargeScaleJitter,
    resize,
    shortest_edge_size,
)


def test_shortest_edge_size_follows_detectron2():
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)   # long side capped
    assert shortest_edge_size(720, 1280, 128, 160) == (90, 160)


def test_lsj_output_size_padding_and_determinism():
    image = torch.randint(0, 255, (3, 60, 80), dtype=torch.uint8)
    masks = torch.zeros(2, 60, 80, dtype=torch.bool)
    masks[0, 10:30, 20:50] = True
    masks[1, 40:60, 0:10] = True
    lsj = LargeScaleJitter(size=(64, 64), min_scale=0.3, max_scale=2.0)
    for seed in range(20):
        a = lsj(image, masks, torch.Generator().manual_seed(seed))
        b = lsj(image, masks, torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert a[0].shape == (3, 64, 64) and a[1].shape == (2, 64, 64)
    # a small scale leaves padding (grey image, empty masks) at the bottom right
    small = LargeScaleJitter(size=(64, 64), min_scale=0.25, max_scale=0.25, flip=False)
    out_image, out_masks = small(image, masks, torch.Generator().manual_seed(0))
    scaled = (60 * 0.2 + 0.5, 80 * 0.2 + 0.5)   # factor = min(16 / 60, 16 / 80) = 0.2
    assert (out_image[:, int(scaled[0]):, :] == PAD_VALUE).all()
    assert not out_masks[:, int(scaled[0]):, :].any()
    assert not out_masks[:, :, int(scaled[1]):].any()


def test_lsj_flip_mirrors_image_and_masks():
    image = torch.arange(3 * 4 * 6, dtype=torch.uint8).reshape(3, 4, 6)
    masks = torch.zeros(1, 4, 6, dtype=torch.bool)
    masks[0, :, :2] = True
    lsj = LargeScaleJitter(size=(4, 6), min_scale=1.0, max_scale=1.0, flip=True)
    seen = set()
    for seed in range(16):
        out_image, out_masks = lsj(image, masks, torch.Generator().manual_seed(seed))
        flipped = torch.equal(out_image, image.flip(-1))
        assert flipped or torch.equal(out_image, image)
        assert torch.equal(out_masks, masks.flip(-1) if flipped else masks)
        seen.add(flipped)
    assert seen == {True, False}


def test_resize_keeps_masks_binary():
    image = torch.randint(0, 255, (3, 10, 10), dtype=torch.uint8)
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, 2:8, 2:8] = True
    out_image, out_masks = resize(image, masks, (20, 20))
    assert out_image.dtype == torch.uint8 and out_masks.dtype == torch.bool
    assert out_masks.sum() == 4 * masks.sum()
