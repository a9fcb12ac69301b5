"""The layer probe as a library: bf16 predictions agree with fp32, the imbalance measures,
the layers it refuses, and its detections and APs equal a per-layer reference."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.ops import box_iou

from dimaskdino.analysis.probe import imbalance_measures, probe_layers
from dimaskdino.checkpoint import load_model
from dimaskdino.config import ConfigError, preset
from dimaskdino.data.coco import CocoInstances
from dimaskdino.data.loader import EvaluationImages
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from dimaskdino.engine.evaluator import (
    METRICS,
    CocoResults,
    coco_evaluate,
)
from dimaskdino.engine.inference import predictions
from dimaskdino.modeling.model import DIMaskDINO
from dimaskdino.modeling.postprocess import stacked_instance_inference


def tight_boxes(found: list[dict]) -> list[dict]:
    """The exported mask results with each ``bbox`` replaced by the tight box of its mask
    (pycocotools' ``toBbox``) and no mask: the ``mask-box`` task's detections."""
    return [{**{k: v for k, v in f.items() if k != "segmentation"},
             "bbox": mask_utils.toBbox(f["segmentation"]).tolist()} for f in found]


@pytest.mark.trained
def test_bf16_predictions_agree_with_fp32(trained):
    """Each confident fp32 detection has a bf16 twin: same class, box IoU > 0.95, score
    within 0.02."""
    checkpoint, spec, _ = trained
    model, config = load_model(checkpoint)
    dataset = EvaluationImages(CocoInstances(*spec.split(":")[1:]), config.data.test_short)
    # whole lists: interleaving the generators would unbalance their no_grad regions
    runs = [list(predictions(model, dataset, precision=precision, progress=False))
            for precision in ("fp32", "bf16")]
    confident = 0
    for (_, exact), (_, reduced) in zip(*runs, strict=True):
        for a, b in zip(exact.instances, reduced.instances, strict=True):
            keep = a["scores"] > 0.3
            confident += int(keep.sum())
            for box, label, score in zip(a["pred_boxes"][keep], a["pred_classes"][keep],
                                         a["scores"][keep]):
                same = b["pred_classes"] == label
                iou = box_iou(box[None], b["pred_boxes"][same])[0]
                twin = iou.argmax()
                assert iou[twin] > 0.95
                assert abs(b["scores"][same][twin] - score) < 0.02
    assert confident >= 4


def test_imbalance_measures():
    table = pd.DataFrame([
        {"layer": 0, "task": "box", "AP": 10.0}, {"layer": 0, "task": "mask", "AP": 14.0},
        {"layer": 1, "task": "box", "AP": 20.0}, {"layer": 1, "task": "mask", "AP": 21.0}])
    measures = imbalance_measures(table)
    assert measures["gap_per_layer"] == {0: 4.0, 1: 1.0}
    assert (measures["first_layer_gap"], measures["last_layer_gap"]) == (4.0, 1.0)
    assert measures["gap_change"] == -3.0
    assert "first_layer_loc_box_minus_mask" not in measures
    errors = pd.DataFrame([
        {"layer": layer, "task": task, "error": error, "dAP": value}
        for layer, task, loc in ((0, "box", 9.0), (0, "mask", 2.5), (1, "box", 3.0),
                                 (1, "mask", 2.0))
        for error, value in (("Loc", loc), ("Miss", 1.0))])
    measures = imbalance_measures(table, errors)
    assert measures["first_layer_loc_box_minus_mask"] == 6.5
    assert measures["last_layer_loc_box_minus_mask"] == 1.0


def test_no_layers_or_layers_outside_the_model_are_refused():
    model = DIMaskDINO(preset("tiny").model).eval()
    for layers in ([], [0, 4], [-1]):
        with pytest.raises(ConfigError, match=r"layers must lie in 0\.\.3 \(at least one\)"):
            probe_layers(model, None, layers)


def test_probe_equals_a_per_layer_reference(tmp_path):
    """The probe's detections (exported as they are) and APs are those of a direct
    computation: every layer of every image on its own through
    ``stacked_instance_inference`` with full-size bool masks, every pair's mask encoded by
    itself, each layer scored by ``coco_evaluate``; the same boxes, classes and RLEs, mask
    scores within float32 rounding (the encoder sums them in float64). Random weights keep
    every layer's top pairs; images resized for the model (output != input size)."""
    paths = write_synthetic_dataset(tmp_path / "data", SyntheticSpec(
        num_train=1, num_val=3, height=80, width=112, max_objects=4, seed=2))
    annotations, images = paths["val"]
    config = preset("tiny")
    torch.manual_seed(0)
    model = DIMaskDINO(config.model).eval()
    dataset = EvaluationImages(CocoInstances(annotations, images), 64)
    result = probe_layers(model, dataset, batch_size=2, progress=False)
    layers = config.model.predictor.dec_layers + 1
    reference: dict[int, list] = {layer: [] for layer in range(layers)}
    for targets, pred in predictions(model, dataset, 2, all_layers=True, progress=False):
        for i, target in enumerate(targets):
            sizes = (pred.padded_size, pred.image_sizes[i], pred.output_sizes[i])
            for layer, outputs in enumerate(pred.layers):
                [found] = stacked_instance_inference(*(outputs[key][i:i + 1] for key in (
                    "pred_logits", "pred_masks", "pred_boxes")), *sizes,
                    config.model.detections_per_image)
                del found["query_index"]  # no sharing: every pair's mask encoded alone
                reference[layer] += CocoResults.from_instances(
                    found, target["image_id"], dataset.dataset.category_ids).to_dicts()
    exported = {layer: found.to_dicts() for layer, found in result.results.items()}
    for layer, want in reference.items():
        got = exported[layer]
        assert [{k: v for k, v in r.items() if k != "score"} for r in got] == [
            {k: v for k, v in r.items() if k != "score"} for r in want]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want],
                                                          rel=1e-6, abs=1e-9)
    shared = result.results[0].segmentations
    assert len({id(s) for s in shared}) < len(shared)  # the case sharing speeds up occurs
    ground_truth = json.loads(annotations.read_text())
    table = result.table.set_index(["layer", "task"])
    for layer, found in reference.items():
        for iou, task in (("bbox", "box"), ("segm", "mask")):
            expected = coco_evaluate(ground_truth, found, iou)
            assert table.loc[(layer, task), list(METRICS)].to_dict() == expected
        boxes = coco_evaluate(ground_truth, tight_boxes(found), "bbox", "pycocotools")
        measured = table.loc[(layer, "mask-box"), list(METRICS)]
        assert measured.to_numpy() == pytest.approx(list(boxes.values()), abs=0.01)


