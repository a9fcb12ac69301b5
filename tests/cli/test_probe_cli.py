"""``dimask layer-probe``: per-layer AP agrees with pycocotools on the exported files,
errors with hotcoco's TIDE and consistency with a direct computation from those files, the
last layer agrees with ``dimask eval``, official checkpoints probe, bare image folders give
consistency only, exported models probe like their checkpoints, bad input is one line."""

from __future__ import annotations

import json

import hotcoco
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from dimaskdino.checkpoint import load_model
from dimaskdino.cli import app
from dimaskdino.data.coco import CocoInstances
from dimaskdino.data.loader import EvaluationImages
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from dimaskdino.engine.evaluator import (
    METRICS,
    coco_evaluate,
    evaluate_model,
)
from tests.analysis.test_probe import tight_boxes
from tests.cli.test_training_cli import one_line_error

runner = CliRunner()


@pytest.mark.trained
def test_probe_files_agree_with_pycocotools_and_eval(trained, tmp_path):
    checkpoint, spec, annotations = trained
    out = tmp_path / "out"
    result = runner.invoke(app, ["layer-probe", str(checkpoint), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "probe.csv")
    assert list(table.columns) == ["model", "layer", "task", *METRICS]
    assert sorted(set(table["layer"])) == [0, 1, 2, 3]
    assert set(table["task"]) == {"box", "mask", "mask-box"}
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
        if row.task == "mask-box":
            found, iou = tight_boxes(found), "bbox"
        reference = coco_evaluate(ground_truth, found, iou, backend="pycocotools")
        for metric in METRICS:
            assert abs(getattr(row, metric) - reference[metric]) <= 0.01, (row, reference)
    assert table["AP"].max() > 20          # the checks above compare real numbers
    _check_errors(out, annotations, info)
    _check_consistency(out, info)
    # the last layer is what ``dimask eval`` reports
    model, config = load_model(checkpoint)
    dataset = EvaluationImages(CocoInstances(*spec.split(":")[1:]), config.data.test_short)
    final = evaluate_model(model, dataset, progress=False)
    last = table[table["layer"] == 3].set_index("task")
    for iou, task in (("bbox", "box"), ("segm", "mask")):
        for metric in METRICS:
            assert last.loc[task, metric] == pytest.approx(final[iou][metric], abs=1e-9)


def _check_errors(out, annotations, info):
    """errors.csv is hotcoco's TIDE recomputed from the exported files and the annotations."""
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors.columns) == ["model", "layer", "task", "error", "dAP"]
    assert info["tide"] == {"pos_iou": 0.5, "background_iou": 0.1}
    names = ["Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FP", "FN"]
    gt = hotcoco.COCO(str(annotations))
    for (layer, task), rows in errors.groupby(["layer", "task"]):
        iou = "bbox" if task == "box" else "segm"
        found = json.loads((out / "detections" / f"layer{layer}_{iou}.json").read_text())
        if task == "mask-box":
            found, iou = tight_boxes(found), "bbox"
        evaluator = hotcoco.COCOeval(gt, gt.load_res(found), iou)
        evaluator.evaluate()
        expected = evaluator.tide_errors(pos_thr=0.5, bg_thr=0.1)["delta_ap"]
        assert list(rows["error"]) == names
        assert rows["dAP"].to_numpy() == pytest.approx([100 * expected[n] for n in names],
                                                        abs=1e-9)
    assert len(errors) == 4 * 3 * len(names)
    loc = errors[errors["error"] == "Loc"].set_index(["layer", "task"])["dAP"]
    imbalance = info["imbalance"]
    assert imbalance["first_layer_loc_box_minus_mask"] == pytest.approx(
        loc[(0, "box")] - loc[(0, "mask")], abs=1e-6)
    assert imbalance["last_layer_loc_box_minus_mask"] == pytest.approx(
        loc[(3, "box")] - loc[(3, "mask")], abs=1e-6)


def _check_consistency(out, info):
    """consistency.csv from the exported files, recomputed by decoding every mask; the bbox
    and segm files list the same detections in the same order."""
    consistency = pd.read_csv(out / "consistency.csv")
    assert list(consistency.columns) == ["model", "layer", "detections", "mean_iou",
                                         "frac_below_0.5"]
    for row in consistency.to_dict(orient="records"):
        boxes = json.loads((out / "detections" / f"layer{row['layer']}_bbox.json").read_text())
        masks = json.loads((out / "detections" / f"layer{row['layer']}_segm.json").read_text())
        assert [{k: v for k, v in m.items() if k != "segmentation"} for m in masks] == boxes
        ious = []
        for detection in masks:
            mask = mask_utils.decode(detection["segmentation"]).astype(bool)
            if not mask.any():
                continue
            rows, columns = np.nonzero(mask)
            tight = (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1)
            x, y, w, h = detection["bbox"]
            inter = (max(0, min(x + w, tight[2]) - max(x, tight[0]))
                     * max(0, min(y + h, tight[3]) - max(y, tight[1])))
            area = (tight[2] - tight[0]) * (tight[3] - tight[1])
            ious.append(inter / (w * h + area - inter))
        assert row["detections"] == len(ious) > 0
        assert row["mean_iou"] == pytest.approx(np.mean(ious), abs=1e-9)
        assert row["frac_below_0.5"] == pytest.approx(np.mean(np.array(ious) < 0.5), abs=1e-12)
    assert info["consistency"] == consistency.to_dict(orient="records")


def test_errors_and_consistency_on_unseen_images(trained, tmp_path):
    """On images the model did not fit, the errors are not all zero (the fitted images can
    score AP50 = 100, where every TIDE error is 0)."""
    checkpoint, _, annotations = trained
    val = annotations.parent / "instances_val.json"
    out = tmp_path / "out"
    result = runner.invoke(app, ["layer-probe", str(checkpoint), "--data",
                                 f"coco-json:{val}:{annotations.parent.parent / 'val'}",
                                 "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "probe.json").read_text())
    _check_errors(out, val, info)
    _check_consistency(out, info)
    assert pd.read_csv(out / "errors.csv")["dAP"].abs().max() > 1


def test_probe_of_images_without_annotations(trained, tmp_path):
    """images:DIR: consistency and detections, no AP, said in one line; an unreadable file
    in the folder is one error line naming it, and nothing is written."""
    checkpoint, _, annotations = trained
    folder = annotations.parent.parent / "train"
    out = tmp_path / "out"
    result = runner.invoke(app, ["layer-probe", str(checkpoint), "--data", f"images:{folder}",
                                 "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "has no annotations: box-mask consistency and detections only, no AP" in (
        result.output)
    assert not (out / "probe.csv").exists() and not (out / "errors.csv").exists()
    consistency = pd.read_csv(out / "consistency.csv")
    assert list(consistency["layer"]) == [0, 1, 2, 3] and (consistency["detections"] > 0).all()
    info = json.loads((out / "probe.json").read_text())
    assert info["annotation_file"] is None and info["table"] == []
    found = json.loads((out / "detections" / "layer3_segm.json").read_text())
    assert {d["image_id"] for d in found} == {1, 2}
    bad = tmp_path / "bad"
    bad.mkdir()
    for image in folder.iterdir():
        Image.open(image).save(bad / image.name)
    (bad / "broken.png").write_bytes(b"\x89PNG not an image")
    line = one_line_error(["layer-probe", str(checkpoint), "--data", f"images:{bad}",
                           "--out", str(tmp_path / "none")])
    assert "broken.png" in line and not (tmp_path / "none").exists()


def test_selected_layers(trained, tmp_path):
    checkpoint, _, _ = trained
    result = runner.invoke(app, ["layer-probe", str(checkpoint), "--layers", "0,3",
                                 "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(set(pd.read_csv(tmp_path / "probe.csv")["layer"])) == [0, 3]
    assert list(pd.read_csv(tmp_path / "consistency.csv")["layer"]) == [0, 3]
    assert sorted(set(pd.read_csv(tmp_path / "errors.csv")["layer"])) == [0, 3]
    assert sorted(p.name for p in (tmp_path / "detections").iterdir()) == [
        "layer0_bbox.json", "layer0_segm.json", "layer3_bbox.json", "layer3_segm.json"]


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
    assert sorted(set(table["layer"])) == [0, 1, 2, 3] and len(table) == 3 * 4
    assert torch.isfinite(torch.tensor(table["AP"].to_numpy())).all()


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


def test_exported_model_probes_like_the_checkpoint(trained, tmp_path):
    """``dimask layer-probe MODEL.onnx`` (onnxruntime, float32): the checkpoint's probe within
    0.1 AP on every (layer, task), the same files with the same columns, and ``dimask eval``
    of the file alike; the model exported at the images' size (96x96), so both pad alike."""
    checkpoint, _, _ = trained
    model = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(model),
                                 "--height", "96", "--width", "96"])
    assert result.exit_code == 0, result.output
    reports = {}
    for name, path in (("checkpoint", checkpoint), ("onnx", model)):
        out = tmp_path / name
        for command in (["layer-probe", str(path), "--out", str(out)],
                        ["eval", str(path), "--out", str(out)]):
            result = runner.invoke(app, [*command, "--quiet"])
            assert result.exit_code == 0, result.output
        reports[name] = out
    files = {name: sorted(p.relative_to(out) for p in out.rglob("*"))
             for name, out in reports.items()}
    assert files["onnx"] == files["checkpoint"]
    ours, theirs = (pd.read_csv(reports[name] / "probe.csv") for name in ("onnx", "checkpoint"))
    assert list(ours.columns) == list(theirs.columns)
    assert ours[["model", "layer", "task"]].equals(theirs[["model", "layer", "task"]])
    assert len(ours) == 3 * 4 and theirs["AP"].max() > 20
    difference = (ours[list(METRICS)] - theirs[list(METRICS)]).abs().to_numpy()
    assert difference.max() <= 0.1, (ours, theirs)
    stages = [json.loads((reports[name] / "probe.json").read_text())["di_stages"]
              for name in ("onnx", "checkpoint")]
    assert [s["stage"] for s in stages[0]] == [s["stage"] for s in stages[1]] == ["ti1", "ti2"]
    for mine, other in zip(*stages, strict=True):
        assert all(abs(mine[m] - other[m]) <= 0.1 for m in METRICS)
    evals = [json.loads((reports[name] / "eval.json").read_text())
             for name in ("onnx", "checkpoint")]
    for iou in ("bbox", "segm"):
        assert all(abs(evals[0][iou][m] - evals[1][iou][m]) <= 0.1 for m in METRICS)
