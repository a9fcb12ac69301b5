"""``dimask train`` / ``dimask eval``: a run writes what it promises; bad input ends with one
line, exit 1, no traceback."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from dimaskdino.checkpoint import load_model
from dimaskdino.cli import app
from dimaskdino.config.presets import MODELS, PRESETS
from dimaskdino.data.coco import CocoInstances
from dimaskdino.data.loader import EvaluationImages
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from dimaskdino.engine.evaluator import METRICS, evaluate_model

runner = CliRunner()


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_synthetic_dataset(root, SyntheticSpec(num_train=2, num_val=1, height=64,
                                                       width=64, max_objects=2))


def test_train_then_eval(tmp_path, tiny_dataset, micro_overrides):
    annotations, images = tiny_dataset["train"]
    spec = f"coco-json:{annotations}:{images}"
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--quiet", "--model", "maskdino", "--data", spec,
                                 "--out", str(run), *micro_overrides])
    assert result.exit_code == 0, result.output
    assert "mask" in result.output and str(run) in result.output
    assert (run / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert {"model_0000004.pth", "model_final.pth", "metrics.jsonl", "config.yaml",
            "final_metrics.json"} <= {p.name for p in run.iterdir()}
    assert f"dataset: {spec}" in (run / "config.yaml").read_text()

    result = runner.invoke(app, ["eval", str(run / "model_final.pth"), "--out",
                                 str(tmp_path / "eval"), "--quiet"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert set(written) == {"bbox", "segm"} and set(written["segm"]) == set(METRICS)
    model, config = load_model(run / "model_final.pth")
    direct = evaluate_model(model, EvaluationImages(CocoInstances(annotations, images),
                                                    config.data.test_short), 2, progress=False)
    for iou in ("bbox", "segm"):
        assert written[iou] == pytest.approx(direct[iou])


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--preset", "huge"], "unknown preset 'huge'; choose one of tiny"),
    (["train", "--model", "maskrcnn"], "unknown model 'maskrcnn'"),
    (["train", "solver.max_itr=3"], "unknown config key 'solver.max_itr'"),
    (["train", "solver.max_iter=three"], "solver.max_iter: expected int, got 'three'"),
    (["train", "model.predictor.dec_layers=[1]"], "dec_layers: expected int"),
    (["eval", "missing.pth"], "checkpoint not found: missing.pth"),
])
def test_bad_arguments(args, message):
    assert message in one_line_error(args)


def test_help_names_every_preset_and_model():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for name in (*PRESETS, *MODELS):
        assert name in result.output


def test_missing_annotation_file(tmp_path, micro_overrides):
    line = one_line_error(["train", "--quiet", "--out", str(tmp_path / "run"), *micro_overrides,
                           f"data.dataset=coco-json:{tmp_path / 'none.json'}:{tmp_path}"])
    assert "none.json" in line


def test_malformed_annotation_file(tmp_path, micro_overrides):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    line = one_line_error(["train", "--quiet", "--out", str(tmp_path / "run"), *micro_overrides,
                           f"data.dataset=coco-json:{bad}:{tmp_path}"])
    assert "bad.json" in line and "JSON" in line


def test_unreadable_image(tmp_path, tiny_dataset, micro_overrides):
    annotations, images = tiny_dataset["train"]
    copy = shutil.copytree(images, tmp_path / "images")
    for name in (im["file_name"] for im in json.loads(annotations.read_text())["images"]):
        (copy / name).write_bytes(b"not a png")
    line = one_line_error(["train", "--quiet", "--out", str(tmp_path / "run"), *micro_overrides,
                           f"data.dataset=coco-json:{annotations}:{copy}"])
    assert "cannot read image" in line


def test_eval_of_a_file_that_is_no_checkpoint(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage")
    assert "is not a complete PyTorch checkpoint" in one_line_error(["eval", str(junk)])


def test_r50_presets_need_backbone_weights_before_anything_is_read(tmp_path):
    """The preset's data (coco:datasets/coco) does not exist: the weights are checked
    first, and nothing is written."""
    line = one_line_error(["train", "--preset", "r50-coco-12ep", "--out", str(tmp_path / "run")])
    assert "detectron2://ImageNetPretrained/torchvision/R-50.pkl" in line
    assert "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/torchvision/R-50.pkl" \
        in line
    assert "model.backbone_weights=PATH" in line and "model.backbone_weights=none" in line
    assert not (tmp_path / "run").exists()


def bad_weight_files(tmp_path) -> dict[str, tuple]:
    """name -> (path, what the error line says)."""
    import torch
    import torchvision

    resnet18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(resnet18.read_bytes()[:200_000])
    text = tmp_path / "readme.pth"
    text.write_text("these are not weights\n")
    return {"wrong architecture": (resnet18, "holds ResNet-18 weights; the model's backbone is "
                                             "ResNet-50"),
            "truncated": (truncated, "is not a complete PyTorch checkpoint"),
            "not a checkpoint": (text, "is not a complete PyTorch checkpoint"),
            "missing": (tmp_path / "none.pth", "not found")}


def test_bad_weight_files_are_one_line_before_any_data_is_read(tmp_path):
    files = bad_weight_files(tmp_path)
    for name, (path, message) in files.items():
        run = tmp_path / "run"
        line = one_line_error(["train", "--preset", "r50-coco-12ep", "--out", str(run),
                               f"model.backbone_weights={path}"])
        assert message in line and str(path) in line, name
        assert not run.exists(), name
    for name in ("truncated", "not a checkpoint", "missing"):
        path, message = files[name]
        line = one_line_error(["train", "--preset", "r50-coco-12ep", "--out", str(run),
                               "--init-from", str(path)])
        assert message in line, name
        assert not run.exists(), name
    line = one_line_error(["train", "--init-from", str(tmp_path / "resnet18.pth")])
    assert "is not a dimask training checkpoint" in line
    assert "--init-from" in one_line_error(["train", "--official-config", "x.yaml"])


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, micro_overrides, monkeypatch):
    import errno

    from dimaskdino import fileio
    from dimaskdino.engine.checkpointer import last_checkpoint, read_checkpoint

    save = torch.save

    def save_then_fill_up(obj, path):  # the disk fills up before the second checkpoint
        if "model_0000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        save(obj, path)

    monkeypatch.setattr(fileio.torch, "save", save_then_fill_up)
    run = tmp_path / "run"
    line = one_line_error(["train", "--quiet", "--out", str(run), *micro_overrides,
                           "solver.max_iter=6", "solver.checkpoint_period=2"])
    assert line == (f"error: cannot write {run / 'model_0000004.pth'}: No space left on "
                    "device; any previous version of it is left as it was")
    assert last_checkpoint(run) == run / "model_0000002.pth"
    assert read_checkpoint(last_checkpoint(run))["iteration"] == 2
    assert sorted(p.name for p in run.iterdir()) == [
        "config.yaml", "last_checkpoint", "metrics.jsonl", "model_0000002.pth"]


@pytest.mark.parametrize("content, message", [
    (b"", "is empty (0 bytes)"),
    (None, "is truncated or corrupt"),
])
def test_eval_of_an_empty_or_truncated_checkpoint(tmp_path, content, message):
    path = tmp_path / "model.pth"
    if content is None:
        torch.save({"weights": torch.ones(100)}, path)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    assert message in one_line_error(["eval", str(path)])


class Pickled:
    """A class a checkpoint must not smuggle in."""


def test_eval_refuses_a_checkpoint_holding_code(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"model": Pickled()}, path)
    line = one_line_error(["eval", str(path)])
    assert "test_training_cli.Pickled" in line and "weights_only=True" in line
    assert "never unpickles code" in line


def test_resume_with_another_architecture_size(tmp_path, micro_overrides):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--quiet", "--out", str(run), *micro_overrides,
                                 "solver.max_iter=2", "solver.checkpoint_period=1"])
    assert result.exit_code == 0, result.output
    line = one_line_error(["train", "--quiet", "--resume", "--out", str(run),
                           *micro_overrides, "solver.max_iter=4",
                           "model.predictor.hidden_dim=32", "model.encoder.conv_dim=32"])
    assert "holds another model than this config's" in line and "has shape" in line
