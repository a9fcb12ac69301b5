"""Box-mask consistency against hand-made detections and pycocotools' IoU."""

from __future__ import annotations

import math

import numpy as np
from pycocotools import mask as mask_utils

from dimaskdino.analysis.consistency import box_iou_xywh, box_mask_iou, consistency_summary


def _result(bbox, mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": bbox, "segmentation": rle}


def test_known_ious():
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:12, 5:15] = True  # tight box [5, 2, 10, 10]
    results = [
        _result([5, 2, 10, 10], mask),    # exact fit: 1
        _result([5, 2, 20, 10], mask),    # twice as wide: 100 / 200
        _result([15, 2, 10, 10], mask),   # beside it: 0
        _result([0, 0, 5, 5], np.zeros((20, 30), dtype=bool)),  # empty mask: left out
    ]
    assert np.allclose(box_mask_iou(results), [1.0, 0.5, 0.0])
    summary = consistency_summary(results)
    assert summary["detections"] == 3
    assert math.isclose(summary["mean_iou"], 0.5)
    assert math.isclose(summary["frac_below_0.5"], 1 / 3)


def test_elementwise_iou_equals_pycocotools():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 50, (40, 2)), rng.uniform(0.5, 30, (40, 2))], axis=1)
    b = np.concatenate([rng.uniform(0, 50, (40, 2)), rng.uniform(0.5, 30, (40, 2))], axis=1)
    reference = np.diag(mask_utils.iou(a.tolist(), b.tolist(), [0] * len(b)))
    assert np.allclose(box_iou_xywh(a, b), reference)


def test_no_detection():
    assert box_mask_iou([]).size == 0
    assert consistency_summary([])["detections"] == 0


def test_more_than_255_detections():
    """A layer of 300 detections per image (pycocotools' ``mask.area`` overflows there)."""
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:12, 5:15] = True
    empty = np.zeros((20, 30), dtype=bool)
    results = [_result([5, 2, 20, 10], mask if i % 3 else empty) for i in range(300)]
    summary = consistency_summary(results)
    assert summary["detections"] == 200 and math.isclose(summary["mean_iou"], 0.5)
