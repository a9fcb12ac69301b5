"""COCO evaluation: hotcoco and faster-coco-eval against pycocotools, TIDE errors on hand-made
cases, and result conversion."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from dimaskdino.config import ConfigError
from dimaskdino.engine.evaluator import (
    METRICS,
    TIDE_ERRORS,
    CocoResults,
    check_backend,
    coco_evaluate,
    encode_masks,
    hotcoco_evaluation,
    hotcoco_ground_truth,
    summary,
    tide_errors,
)


def rectangle_masks(boxes, height, width):
    masks = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    return masks


def make_dataset(seed: int = 0):
    """Three images with small, medium and large rectangles of two categories, and noisy
    predictions of them (some missed, some spurious)."""
    rng = np.random.default_rng(seed)
    images, annotations, predictions = [], [], []
    for image_id in range(1, 4):
        height, width = 120, 160
        images.append({"id": image_id, "height": height, "width": width,
                       "file_name": f"{image_id}.png"})
        boxes = []
        for size in (6, 20, 50, 110):
            x0, y0 = rng.integers(0, width - size), rng.integers(0, height - min(size, 100))
            boxes.append((int(x0), int(y0), int(x0 + size), int(y0 + min(size, 100))))
        masks = rectangle_masks(boxes, height, width)
        for rle, box, k in zip(encode_masks(masks), boxes, range(len(boxes)), strict=True):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 3 + 4 * (k % 2),
                "segmentation": rle, "area": float(mask_utils.area(rle)),
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "iscrowd": 0})
        jitter = rng.integers(-3, 4, size=(len(boxes), 4))
        noisy = [tuple(int(np.clip(v + j, 0, lim)) for v, j, lim in
                       zip(b, jit, (width, height, width, height), strict=True))
                 for b, jit in zip(boxes, jitter, strict=True)][:3]
        noisy.append((5, 5, 40, 30))  # a false positive
        predictions.append({
            "image_id": image_id,
            "instances": {
                "scores": torch.tensor(rng.uniform(0.3, 1.0, len(noisy))),
                "pred_classes": torch.tensor([k % 2 for k in range(len(noisy))]),
                "pred_boxes": torch.tensor(noisy, dtype=torch.float64),
                "pred_masks": rectangle_masks(noisy, height, width),
            }})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}
    return gt, predictions


def test_encode_masks_round_trips():
    masks = rectangle_masks([(1, 2, 5, 7), (0, 0, 3, 3)], 10, 12)
    decoded = mask_utils.decode(encode_masks(masks))
    assert np.array_equal(decoded.transpose(2, 0, 1).astype(bool), masks.numpy())


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (4, 64, 33), (2, 151, 203)])
def test_encode_masks_writes_pycocotools_rle_byte_for_byte(shape):
    masks = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape))) > 0.7
    masks[0] = True  # a full mask, and (below) an empty one
    masks[-1, : shape[1] // 2] = False
    reference = mask_utils.encode(np.asfortranarray(masks.numpy().transpose(1, 2, 0)
                                                    .astype(np.uint8)))
    got = encode_masks(masks)
    assert [r["counts"] for r in got] == [r["counts"].decode("ascii") for r in reference]
    assert [list(r["size"]) for r in got] == [list(r["size"]) for r in reference]


@pytest.mark.parametrize(("backend", "tolerance"), [("hotcoco", 1e-9), ("faster", 0.1)])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1])
def test_backends_agree_with_pycocotools(iou_type, backend, tolerance, seed):
    """hotcoco (the default) scores exactly like pycocotools; faster-coco-eval within 0.1."""
    gt, predictions = make_dataset(seed)
    results = [r for p in predictions for r in
               CocoResults.from_instances(p["instances"], p["image_id"], [3, 7]).to_dicts()]
    fast = coco_evaluate(gt, results, iou_type, backend=backend)
    reference = coco_evaluate(gt, results, iou_type, backend="pycocotools")
    assert list(fast) == list(METRICS)
    for name in METRICS:
        assert abs(fast[name] - reference[name]) <= tolerance, (name, fast, reference)
    assert 0 < reference["AP"] < 100
    assert all(0 <= reference[name] <= 100 for name in METRICS)  # all size ranges populated


@pytest.mark.parametrize("backend", ["hotcoco", "faster", "pycocotools"])
def test_evaluation_leaves_its_inputs_as_they_were(backend):
    """The evaluators write into the entries they read; coco_evaluate hands them copies, so
    the same ground truth and results can be scored again (the probe scores every layer)."""
    gt, predictions = make_dataset()
    gt["annotations"][0]["segmentation"] = [[10.0, 10.0, 30.0, 10.0, 30.0, 25.0]]  # a polygon
    results = [r for p in predictions for r in
               CocoResults.from_instances(p["instances"], p["image_id"], [3, 7]).to_dicts()]
    gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(results)
    first = {iou: coco_evaluate(gt, results, iou, backend) for iou in ("segm", "bbox")}
    assert gt == gt_before and results == results_before
    assert first == {iou: coco_evaluate(gt, results, iou, backend) for iou in ("segm", "bbox")}


def test_results_carry_dataset_ids_and_xywh_boxes():
    _, predictions = make_dataset()
    results = CocoResults.from_instances(predictions[0]["instances"], 1, [3, 7]).to_dicts()
    assert {r["category_id"] for r in results} == {3, 7}
    x0, y0, x1, y1 = predictions[0]["instances"]["pred_boxes"][0].tolist()
    assert results[0]["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    assert coco_evaluate(make_dataset()[0], [], "bbox") == dict.fromkeys(METRICS, 0.0)


def test_unknown_backend_is_a_config_error():
    check_backend("hotcoco")
    with pytest.raises(ConfigError, match="choose hotcoco, faster, pycocotools"):
        check_backend("tide")


def _one_box_dataset():
    return {"images": [{"id": 1, "height": 100, "width": 100}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                             "area": 1600.0, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def _box(x, y, w, h, score, category=1):
    return {"image_id": 1, "category_id": category, "bbox": [x, y, w, h], "score": score}


@pytest.mark.parametrize(("detections", "expected"), [
    # IoU 1/3 with the object (between the background 0.1 and the match 0.5): a Loc error;
    # fixed, AP50 goes from 0 to 100
    ([_box(30, 10, 40, 40, 0.9)], {"Loc": 100.0}),
    # the right box with the wrong class: Cls, 0 -> 100
    ([_box(10, 10, 40, 40, 0.9, category=2)], {"Cls": 100.0}),
    # a confident detection on empty background ranks above the hit: AP50 50 -> 100 when it
    # goes (Bkg, and FP, which removes every false positive)
    ([_box(60, 60, 30, 30, 0.9), _box(10, 10, 40, 40, 0.8)], {"Bkg": 50.0, "FP": 50.0}),
])
def test_tide_errors_of_hand_made_cases(detections, expected):
    evaluator = hotcoco_evaluation(hotcoco_ground_truth(_one_box_dataset()), detections, "bbox")
    found = tide_errors(evaluator)
    assert list(found) == list(TIDE_ERRORS)
    assert found == pytest.approx({**dict.fromkeys(TIDE_ERRORS, 0.0), **expected}, abs=1e-9)
    assert summary(evaluator)["AP50"] == pytest.approx(100 - max(expected.values()))


def test_pairs_of_one_query_share_one_encoded_mask():
    """With ``query_index`` each distinct query's mask is encoded once, its RLE dict shared
    by its pairs; the results equal those of encoding every pair's mask."""
    masks = rectangle_masks([(1, 2, 9, 7), (0, 0, 4, 4), (3, 1, 12, 8)], 10, 14)
    query_index = torch.tensor([4, 2, 4, 0, 2])
    instances = {"scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]),
                 "pred_classes": torch.tensor([0, 1, 1, 0, 0]),
                 "pred_boxes": torch.tensor([[1.0, 2.0, 9.0, 7.0]] * 5),
                 "pred_masks": masks[[0, 1, 0, 2, 1]], "query_index": query_index}
    shared = CocoResults.from_instances(instances, 5, [3, 7]).to_dicts()
    alone = CocoResults.from_instances({k: v for k, v in instances.items() if k != "query_index"},
                                 5, [3, 7]).to_dicts()
    assert shared == alone
    assert shared[0]["segmentation"] is shared[2]["segmentation"]
    assert shared[1]["segmentation"] is shared[4]["segmentation"]
    assert shared[0]["segmentation"] is not shared[1]["segmentation"]
    decoded = mask_utils.decode([r["segmentation"] for r in shared])
    assert np.array_equal(decoded.transpose(2, 0, 1), instances["pred_masks"].numpy())
