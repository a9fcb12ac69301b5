"""Paired comparisons: the vectorised bootstrap AP equals COCO's AP of explicitly resampled
datasets; the bootstrap draws every image count once per replicate. (``dimask compare``
itself: tests/cli/test_compare_cli.py, on the probes :func:`write_probe` writes.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from dimaskdino.analysis.compare import bootstrap_weights, matches, weighted_ap
from dimaskdino.analysis.probe import COLUMNS, ProbeResult, save_probe
from dimaskdino.engine.evaluator import (
    CocoResults,
    coco_evaluate,
    hotcoco_evaluation,
    hotcoco_ground_truth,
)
from tests.engine.test_evaluator import make_dataset


def resampled(gt: dict, results: list[dict], counts) -> tuple[dict, list[dict]]:
    """The dataset and results with image ``i`` repeated ``counts[i]`` times (new ids)."""
    images, annotations, found = [], [], []
    for image, count in zip(gt["images"], counts, strict=True):
        for _ in range(int(count)):
            new = len(images) + 1
            images.append({**image, "id": new})
            annotations += [{**a, "image_id": new} for a in gt["annotations"]
                            if a["image_id"] == image["id"]]
            found += [{**r, "image_id": new} for r in results if r["image_id"] == image["id"]]
    annotations = [{**a, "id": i + 1} for i, a in enumerate(annotations)]
    return {**gt, "images": images, "annotations": annotations}, found


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_ap_is_the_ap_of_the_resampled_images(iou_type, seed):
    gt, predictions = make_dataset(seed)
    results = [r for p in predictions for r in
               CocoResults.from_instances(p["instances"], p["image_id"], [3, 7]).to_dicts()]
    weights = np.vstack([np.ones(3), bootstrap_weights(3, 6, seed)])
    found = weighted_ap(matches(hotcoco_evaluation(hotcoco_ground_truth(gt), results,
                                                   iou_type)), weights)
    expected = [coco_evaluate(*resampled(gt, results, row), iou_type, "pycocotools")["AP"]
                for row in weights]
    assert found == pytest.approx(expected, abs=1e-9)
    assert len(set(np.round(expected, 6))) > 2  # the draws differ


def test_bootstrap_weights_draw_every_image_count_once_per_replicate():
    weights = bootstrap_weights(7, 50, seed=3)
    assert weights.shape == (50, 7) and (weights.sum(axis=1) == 7).all()
    assert np.array_equal(weights, bootstrap_weights(7, 50, seed=3))


def many_images(shift: int = 0) -> tuple[dict, dict[int, CocoResults]]:
    """Fifteen images (make_dataset of seeds 0..4) and two layers of results; ``shift``
    moves the boxes and masks' results of layer 1 by that many pixels (a worse model)."""
    gt = {"images": [], "annotations": [], "categories": None}
    layers: dict[int, list[CocoResults]] = {0: [], 1: []}
    for seed in range(5):
        part, predictions = make_dataset(seed)
        offset = 3 * seed
        gt["categories"] = part["categories"]
        gt["images"] += [{**im, "id": im["id"] + offset} for im in part["images"]]
        gt["annotations"] += [{**a, "image_id": a["image_id"] + offset,
                               "id": len(gt["annotations"]) + i + 1}
                              for i, a in enumerate(part["annotations"])]
        for p in predictions:
            found = CocoResults.from_instances(p["instances"], p["image_id"] + offset, [3, 7])
            layers[0].append(found)
            moved = found.boxes + np.array([shift, 0, 0, 0])
            layers[1].append(dataclasses.replace(found, boxes=moved))
    return gt, {layer: CocoResults.concat(parts) for layer, parts in layers.items()}


def write_probe(folder, annotation_file, gt, layers) -> None:
    rows = [{"model": "m", "layer": layer, "task": task,
             **coco_evaluate(gt, found, iou, "pycocotools")}
            for layer, found in layers.items() for iou, task in (("bbox", "box"),
                                                                 ("segm", "mask"))]
    table = pd.DataFrame(rows, columns=COLUMNS)
    save_probe(ProbeResult(table, pd.DataFrame(), {}, results=layers), folder,
               {"annotation_file": str(annotation_file)})
