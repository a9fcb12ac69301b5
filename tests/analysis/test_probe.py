"""The layer probe: per-layer AP agrees with pycocotools on the exported files, the last
layer agrees with ``dimask eval``, official checkpoints probe, bad input is one line."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dimaskdino.analysis.probe import imbalance_measures
from dimaskdino.checkpoint import load_model
from dimaskdino.cli import app
from dimaskdino.config import apply_overrides, preset
from dimaskdino.data.coco import CocoInstances
from dimaskdino.data.loader import EvaluationImages
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from dimaskdino.engine.evaluator import METRICS, coco_evaluate, evaluate_model
from dimaskdino.engine.trainer import Trainer

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DI-MaskDINO fitted to two images (so that every layer scores above zero)."""
    root = tmp_path_factory.mktemp("probe")
    paths = write_synthetic_dataset(root / "data", SyntheticSpec(
        num_train=2, num_val=1, height=96, width=96, max_objects=4, seed=5))
    annotations, images = paths["train"]
    spec = f"coco-json:{annotations}:{images}"
    config = apply_overrides(preset("tiny"), [
        f"data.dataset={spec}", "data.min_scale=1.0", "data.max_scale=1.0",
        "data.image_size=[96, 96]", "data.test_short=0", "solver.batch_size=2",
        "solver.max_iter=120", "solver.steps=[1000]", "solver.warmup_iters=20",
        "solver.checkpoint_period=0"])
    result = Trainer(config, root / "run", progress=False).run()
    return result.checkpoint, spec, annotations


@pytest.mark.trained
def test_probe_files_agree_with_pycocotools_and_eval(trained, tmp_path):
    checkpoint, spec, annotations = trained
    out = tmp_path / "out"
    result = runner.invoke(app, ["layer-probe", str(checkpoint), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "probe.csv")
    assert list(table.columns) == ["model", "layer", "task", *METRICS]
    assert sorted(set(table["layer"])) == [0, 1, 2, 3]
    assert set(table["task"]) == {"box", "mask"}
    info = json.loads((out / "probe.json").read_text())
    assert info["annotation_file"] == str(annotations) and info["dataset"] == spec
    assert {"gap_per_layer", "first_layer_gap", "last_layer_gap", "gap_change"} <= set(
        info["imbalance"])
    assert [s["stage"] for s in info["di_stages"]] == ["ti1", "ti2"]
    ground_truth = json.loads(annotations.read_text())
    for row in table.itertuples():
        iou = "bbox" if row.task == "box" else "segm"
        found = json.loads((out / "detections" / f"layer{row.layer}_{iou}.json").read_text())
        assert (iou == "segm") == ("segmentation" in found[0])
        reference = coco_evaluate(ground_truth, found, iou, backend="pycocotools")
        assert abs(row.AP - reference["AP"]) <= 0.1
        assert abs(row.AP50 - reference["AP50"]) <= 0.1
    assert table["AP"].max() > 20          # the checks above compare real numbers
    # the last layer is what ``dimask eval`` reports
    model, config = load_model(checkpoint)
    dataset = EvaluationImages(CocoInstances(*spec.split(":")[1:]), config.data.test_short)
    final = evaluate_model(model, dataset, progress=False)
    last = table[table["layer"] == 3].set_index("task")
    for iou, task in (("bbox", "box"), ("segm", "mask")):
        for metric in METRICS:
            assert last.loc[task, metric] == pytest.approx(final[iou][metric], abs=1e-9)


def test_selected_layers(trained, tmp_path):
    checkpoint, _, _ = trained
    result = runner.invoke(app, ["layer-probe", str(checkpoint), "--layers", "0,3",
                                 "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(set(pd.read_csv(tmp_path / "probe.csv")["layer"])) == [0, 3]
    assert sorted(p.name for p in (tmp_path / "detections").iterdir()) == [
        "layer0_bbox.json", "layer0_segm.json", "layer3_bbox.json", "layer3_segm.json"]


def test_imbalance_measures():
    table = pd.DataFrame([
        {"layer": 0, "task": "box", "AP": 10.0}, {"layer": 0, "task": "mask", "AP": 14.0},
        {"layer": 1, "task": "box", "AP": 20.0}, {"layer": 1, "task": "mask", "AP": 21.0}])
    measures = imbalance_measures(table)
    assert measures["gap_per_layer"] == {0: 4.0, 1: 1.0}
    assert (measures["first_layer_gap"], measures["last_layer_gap"]) == (4.0, 1.0)
    assert measures["gap_change"] == -3.0


@pytest.mark.parametrize("name", ["dimaskdino_tiny", "maskdino_tiny"])
def test_probe_runs_on_official_checkpoints(golden_fixtures, tmp_path, name):
    """Official key names and YAML; an 8-category dataset to match the fixtures' classes."""
    paths = write_synthetic_dataset(tmp_path / "data", SyntheticSpec(
        num_train=1, num_val=2, height=64, width=96, seed=1))
    annotations, images = paths["val"]
    data = json.loads(annotations.read_text())
    data["categories"] += [{"id": 7, "name": "extra1"}, {"id": 8, "name": "extra2"}]
    eight = tmp_path / "eight.json"
    eight.write_text(json.dumps(data))
    folder = golden_fixtures / name
    result = runner.invoke(app, [
        "layer-probe", str(folder / "state_dict.pt"), "--official-config",
        str(folder / "config.yaml"), "--data", f"coco-json:{eight}:{images}",
        "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "probe.csv")
    assert sorted(set(table["layer"])) == [0, 1, 2, 3] and len(table) == 8
    assert torch.isfinite(torch.tensor(table["AP"].to_numpy())).all()


def one_line_error(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_bad_input(trained, golden_fixtures, tmp_path):
    checkpoint, _, annotations = trained
    assert "checkpoint not found" in one_line_error(
        ["layer-probe", str(tmp_path / "none.pth")])
    # official weights of another architecture than the YAML describes
    fixtures = golden_fixtures
    line = one_line_error(["layer-probe", str(fixtures / "maskdino_tiny" / "state_dict.pt"),
                           "--official-config", str(fixtures / "dimaskdino_tiny" / "config.yaml"),
                           "--out", str(tmp_path / "x")])
    assert "does not fit" in line
    # a dataset without masks
    data = json.loads(annotations.read_text())
    for ann in data["annotations"]:
        del ann["segmentation"]
    boxes_only = tmp_path / "boxes.json"
    boxes_only.write_text(json.dumps(data))
    line = one_line_error(["layer-probe", str(checkpoint), "--data",
                           f"coco-json:{boxes_only}:{annotations.parent.parent / 'train'}",
                           "--out", str(tmp_path / "y")])
    assert "no segmentation" in line
    assert "layers must lie in 0..3" in one_line_error(
        ["layer-probe", str(checkpoint), "--layers", "0,7", "--out", str(tmp_path / "z")])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
