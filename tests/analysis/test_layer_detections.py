"""What the pictures show: layer lists, the bounded drawing size, the gallery's image rule,
box-mask IoU against pycocotools, saved views, and views of a real model at a bounded
resolution with ground truth scaled along."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from dimaskdino.analysis.layer_detections import (
    Detections,
    drawing_size,
    image_views,
    load_views,
    most_annotated,
    resolve_layers,
    save_views,
)
from dimaskdino.checkpoint import load_official
from dimaskdino.config import ConfigError
from dimaskdino.data.coco import CocoInstances
from dimaskdino.data.images import ImageFolder
from dimaskdino.data.loader import EvaluationImages


def test_resolve_layers():
    assert resolve_layers("0,last", 3) == [0, 3]
    assert resolve_layers("2, last,2", 3) == [2, 3]
    for bad in ("12", "4", "x", "-1", ""):
        with pytest.raises(ConfigError, match="--layers"):
            resolve_layers(bad, 3)


def test_drawing_size_bounds_the_longer_side_only_downwards():
    assert drawing_size(3000, 4000, 1024) == (768, 1024)
    assert drawing_size(4000, 300, 1000) == (1000, 75)
    assert drawing_size(100, 50, 1024) == (100, 50)


def _coco(tmp_path, images, annotations, categories=1):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": k + 1, "name": f"c{k}"} for k in range(categories)]}))
    return path


def test_most_annotated_counts_objects_without_crowds_ties_by_id(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "height": 8, "width": 8} for i in (4, 2, 1, 3)]
    counts = {1: (2, 0), 2: (2, 1), 3: (3, 0), 4: (0, 0)}  # id: (objects, crowds)
    annotations = [{"id": len(counts) * i + k, "image_id": i, "category_id": 1,
                    "bbox": [0, 0, 1, 1], "iscrowd": int(k >= objects)}
                   for i, (objects, crowds) in counts.items() for k in range(objects + crowds)]
    dataset = EvaluationImages(CocoInstances(_coco(tmp_path, images, annotations), tmp_path))
    chosen = most_annotated(dataset, 3)
    assert [dataset.dataset.images[i]["id"] for i in chosen] == [3, 1, 2]


def test_tight_boxes_and_box_mask_iou_agree_with_pycocotools():
    masks = np.zeros((3, 20, 30), bool)
    masks[0, 0:5, 0:10] = True        # tight box 10 x 5 inside the box 10 x 10
    masks[1, 4:12, 6:20] = True       # the box is exactly its tight box
    boxes = np.array([[0, 0, 10, 10], [6, 4, 20, 12], [1, 1, 5, 5]], float)
    found = Detections(boxes, masks, np.zeros(3, int), np.ones(3))   # the third mask is empty
    assert found.tight_boxes().tolist() == [[0, 0, 10, 5], [6, 4, 20, 12], [0, 0, 0, 0]]
    xywh = lambda b: np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)  # noqa: E731
    reference = mask_utils.iou(xywh(boxes[:2]), xywh(found.tight_boxes()[:2]), [0, 0])
    assert found.mean_box_mask_iou() == pytest.approx(np.diag(reference).mean())
    assert found.mean_box_mask_iou() == pytest.approx(0.75)


@pytest.fixture(scope="module")
def official_model(golden_fixtures):
    fixture = golden_fixtures / "maskdino_tiny"
    return load_official(fixture / "config.yaml", fixture / "state_dict.pt")


def test_views_are_bounded_and_ground_truth_follows(official_model, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (400, 600, 3), dtype=np.uint8)).save(
        tmp_path / "big.png")
    polygon = [[100, 100, 300, 100, 300, 200, 100, 200]]   # x 100..300, y 100..200
    annotations = [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [100, 100, 200, 100],
                    "segmentation": polygon, "area": 20000, "iscrowd": 0}]
    images = [{"id": 7, "file_name": "big.png", "height": 400, "width": 600}]
    coco = CocoInstances(_coco(tmp_path, images, annotations, categories=8), tmp_path)
    dataset = EvaluationImages(coco, short=128, max_size=192)
    (view,) = image_views(official_model, dataset, [0], [0, 3], 0.0, max_side=300)
    assert view.name == "big" and view.image.shape == (200, 300, 3)
    assert view.class_names == [f"c{k}" for k in range(8)]
    truth = view.ground_truth
    np.testing.assert_allclose(truth.boxes, [[50, 50, 150, 100]])
    assert truth.masks.shape == (1, 200, 300) and truth.labels.tolist() == [1]
    assert truth.masks[0, 52:98, 52:148].all() and truth.masks[0].sum() == pytest.approx(
        5000, rel=0.05)
    for layer in (0, 3):
        found = view.layers[layer]
        assert len(found) == official_model.config.detections_per_image
        assert found.masks.shape[1:] == (200, 300)
        assert (np.diff(found.scores) <= 0).all()
    assert not np.array_equal(view.layers[0].boxes, view.layers[3].boxes)
    # no annotations (or hidden): no ground truth; names fall back to class k
    (bare,) = image_views(official_model, EvaluationImages(ImageFolder([tmp_path]), 128, 192),
                          [0], [3], 0.5, max_side=300)
    assert bare.ground_truth is None and bare.class_names[:2] == ["class 0", "class 1"]
    assert (bare.layers[3].scores >= 0.5).all()
    (hidden,) = image_views(official_model, dataset, [0], [3], 0.0, ground_truth=False)
    assert hidden.ground_truth is None and hidden.image.shape == (400, 600, 3)

    saved = save_views([view, bare], tmp_path / "saved")
    assert [p.name for p in saved] == ["00-big.npz", "01-big.npz"]
    loaded = load_views(tmp_path / "saved")
    assert [v.name for v in loaded] == ["big", "big"] and loaded[1].ground_truth is None
    for before, after in ((view, loaded[0]), (bare, loaded[1])):
        assert np.array_equal(before.image, after.image) and after.last == 3
        assert before.class_names == after.class_names
        for layer, found in before.layers.items():
            for key in ("boxes", "masks", "labels", "scores"):
                assert np.array_equal(getattr(found, key), getattr(after.layers[layer], key))
