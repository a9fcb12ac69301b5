"""``dimask compare``: the vectorised bootstrap AP equals COCO's AP of explicitly resampled
datasets; a probe compared with itself gives zeros; two different result sets give
intervals around their deltas; mismatched probes are one error line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dimaskdino.analysis.compare import bootstrap_weights, matches, weighted_ap
from dimaskdino.analysis.probe import COLUMNS, ProbeResult, save_probe
from dimaskdino.analysis.probe_history import write_history
from dimaskdino.cli import app
from dimaskdino.engine.evaluator import (
    CocoResults,
    coco_evaluate,
    hotcoco_evaluation,
    hotcoco_ground_truth,
)
from tests.analysis.test_probe_history import CURVES, history, trapezoid_auc
from tests.engine.test_evaluator import make_dataset

runner = CliRunner()


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


@pytest.fixture
def probes(tmp_path):
    gt, base = many_images()
    _, shifted = many_images(shift=4)
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(gt))
    write_probe(tmp_path / "a", annotations, gt, base)
    write_probe(tmp_path / "b", annotations, gt, shifted)
    return tmp_path, gt


def run_compare(*args):
    result = runner.invoke(app, ["compare", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def test_a_probe_compared_with_itself(probes):
    root, _ = probes
    result = run_compare(root / "a", root / "a", "--out", root / "self", "--bootstrap", 200)
    table = pd.read_csv(root / "self" / "compare.csv")
    assert list(table.columns) == ["layer", "task", "ap_a", "ap_b", "delta", "ci_low",
                                   "ci_high"]
    assert list(zip(table["layer"], table["task"])) == [
        (layer, task) for layer in (0, 1) for task in ("box", "mask", "gap")]
    assert (table[["delta", "ci_low", "ci_high"]] == 0).all().all()
    assert (table.loc[table["task"] != "gap", "ap_a"] > 10).all()
    assert "paired bootstrap 95% interval (200 replicates)" in result.output


def test_two_result_sets(probes):
    root, gt = probes
    run_compare(root / "a", root / "b", "--out", root / "ab", "--bootstrap", 300)
    table = pd.read_csv(root / "ab" / "compare.csv").set_index(["layer", "task"])
    assert (table["delta"] == table["ap_b"] - table["ap_a"]).all()
    assert ((table["ci_low"] <= table["delta"]) & (table["delta"] <= table["ci_high"])).all()
    for task, iou in (("box", "bbox"), ("mask", "segm")):
        for layer, name in ((0, "a"), (1, "b")):
            found = json.loads((root / name / "detections" / f"layer{layer}_{iou}.json")
                               .read_text())
            column = "ap_a" if name == "a" else "ap_b"
            assert table.loc[(layer, task), column] == pytest.approx(
                coco_evaluate(gt, found, iou, "pycocotools")["AP"], abs=1e-9)
    # layer 0 is the same in both; layer 1's shifted boxes lose box AP, masks do not move
    assert (table.loc[0, ["delta", "ci_low", "ci_high"]] == 0).all().all()
    box, gap = table.loc[(1, "box")], table.loc[(1, "gap")]
    assert box["delta"] < -1 and box["ci_high"] < 0 < box["ci_high"] - box["ci_low"]
    assert table.loc[(1, "mask"), "delta"] == 0
    assert gap["delta"] == pytest.approx(-box["delta"]) and gap["ci_low"] > 0


def one_line_error(args) -> str:
    result = runner.invoke(app, ["compare", *map(str, args)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_mismatched_probes_are_one_error(probes):
    root, gt = probes
    other = root / "other.json"
    other.write_text(json.dumps(gt))
    _, layers = many_images()
    write_probe(root / "c", other, gt, layers)
    assert "different annotation files" in one_line_error([root / "a", root / "c"])
    write_probe(root / "d", root / "instances.json", gt, {0: layers[0]})
    assert "different layers ([0, 1] and [0])" in one_line_error([root / "a", root / "d"])
    assert "not a layer-probe folder" in one_line_error([root / "a", root / "none"])
    assert not (root / "compare").exists()


def test_learning_speeds_when_both_sides_have_a_history(probes):
    root, _ = probes
    run_compare(root / "a", root / "b", "--out", root / "none", "--bootstrap", 20)
    assert not (root / "none" / "compare_speed.csv").exists()  # neither has a history
    write_history(root / "a", history())
    run_compare(root / "a", root / "b", "--out", root / "one", "--bootstrap", 20)
    assert not (root / "one" / "compare_speed.csv").exists()
    # B: box and mask of layer 0 swapped, so mask is the slower one
    write_history(root / "b", history({(0, "box"): CURVES[0, "mask"],
                                       (0, "mask"): CURVES[0, "box"]}))
    result = run_compare(root / "a", root / "b", "--out", root / "both", "--bootstrap", 20)
    assert "learning speed over training" in result.output
    speeds = pd.read_csv(root / "both" / "compare_speed.csv").set_index(
        ["layer", "task", "measure"])
    assert sorted(set(speeds.index.droplevel(2))) == [(0, "box"), (0, "gap"), (0, "mask")]
    assert tuple(speeds.loc[(0, "box", "iteration_50"), ["a", "b", "delta"]]) == (
        300, 200, -100)
    assert speeds.loc[(0, "mask", "auc"), "b"] == pytest.approx(
        trapezoid_auc(CURVES[0, "box"]))
    assert tuple(speeds.loc[(0, "gap", "first_layer_gap_50"), ["a", "b", "delta"]]) == (
        100, -100, -200)
