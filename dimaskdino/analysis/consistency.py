"""Box-mask consistency: does a detection's box fit its own mask? (no labels needed)

The paper's diagnosis of the imbalance (§1, Fig. 1a) is that first-layer boxes do not fit
the objects their masks cover. This measures that directly on the model's output: for each
detection with a non-empty mask, the IoU between its predicted box and the tight box of
its predicted mask. Boxes are COCO ``[x, y, w, h]``; the tight box is what pycocotools'
``mask.toBbox`` gives (``w`` = last column - first column + 1), so the measure can be
recomputed from any COCO result file.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from dimaskdino.engine.evaluator import CocoResults, Results

BELOW = 0.5  # the threshold of ``frac_below_0.5``


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of two ``(n, 4)`` arrays of ``[x, y, w, h]`` boxes -> ``(n,)``."""
    lo = np.maximum(a[:, :2], b[:, :2])
    hi = np.minimum(a[:, :2] + a[:, 2:], b[:, :2] + b[:, 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=1)
    union = a[:, 2:].prod(axis=1) + b[:, 2:].prod(axis=1) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_mask_iou(results: Results) -> np.ndarray:
    """IoU of each COCO result's ``bbox`` with the tight box of its ``segmentation`` (RLE;
    for :class:`~dimaskdino.engine.evaluator.CocoResults`, its ``mask_boxes`` where it
    has them); detections whose mask is empty are left out. -> ``(n,)`` float64."""
    if not len(results):
        return np.zeros(0)
    if isinstance(results, CocoResults):
        boxes, tight = results.boxes, results.mask_boxes
        if tight is None:
            tight = mask_utils.toBbox(results.segmentations)
    else:
        boxes = np.array([r["bbox"] for r in results], dtype=np.float64)
        tight = mask_utils.toBbox([r["segmentation"] for r in results])
    # an empty mask's tight box is [0, 0, 0, 0], a non-empty one is at least 1 wide (not
    # ``mask.area``: it overflows a uint8 count for more than 255 masks under numpy 2)
    tight = np.asarray(tight, dtype=np.float64)
    keep = tight[:, 2] > 0
    return box_iou_xywh(boxes[keep], tight[keep])


def consistency_summary(results: Results) -> dict:
    """``detections`` (with a non-empty mask), ``mean_iou`` and ``frac_below_0.5`` of
    :func:`box_mask_iou` (NaN when there is no detection)."""
    ious = box_mask_iou(results)
    if not ious.size:
        return {"detections": 0, "mean_iou": float("nan"), "frac_below_0.5": float("nan")}
    return {"detections": int(ious.size), "mean_iou": float(ious.mean()),
            "frac_below_0.5": float((ious < BELOW).mean())}
