"""``dimask compare``: a probe compared with itself gives zeros; two different result sets
give intervals around their deltas; mismatched probes are one error line; learning speeds
where both sides have a probe history."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from dimaskdino.analysis.probe_history import write_history
from dimaskdino.cli import app
from dimaskdino.engine.evaluator import (
    coco_evaluate,
)
from tests.analysis.test_compare import many_images, write_probe
from tests.analysis.test_probe_history import CURVES, history, trapezoid_auc
from tests.cli.test_training_cli import one_line_error

runner = CliRunner()


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


def compare_error(*folders) -> str:
    return one_line_error(["compare", *map(str, folders)])


def test_mismatched_probes_are_one_error(probes):
    root, gt = probes
    other = root / "other.json"
    other.write_text(json.dumps(gt))
    _, layers = many_images()
    write_probe(root / "c", other, gt, layers)
    assert "different annotation files" in compare_error(root / "a", root / "c")
    write_probe(root / "d", root / "instances.json", gt, {0: layers[0]})
    assert "different layers ([0, 1] and [0])" in compare_error(root / "a", root / "d")
    assert "not a layer-probe folder" in compare_error(root / "a", root / "none")
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
