"""``dimask export``, and exported models given to ``dimask layer-probe`` / ``eval``: the file
runs, and each bad input (an opset without GridSample, an image larger than the exported
size, a file that is not ONNX, an ONNX model that is not dimask's) ends with one line,
exit 1."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dimaskdino.cli import app
from dimaskdino.config import apply_overrides, config_to_dict, preset
from dimaskdino.engine.checkpointer import save_checkpoint
from dimaskdino.modeling.model import DIMaskDINO
from tests.cli.test_training_cli import one_line_error

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained micro MaskDINO's dimask checkpoint whose evaluation keeps the images'
    size (``data.test_short=0``)."""
    config = apply_overrides(preset("tiny", "maskdino"), [
        "data.test_short=0", "model.encoder.layers=1", "model.predictor.dec_layers=2",
        "model.predictor.num_queries=10"])
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), "model.pth",
                           model=DIMaskDINO(config.model), optimizer=None, iteration=0,
                           config=config_to_dict(config))


@pytest.fixture(scope="module")
def small_export(checkpoint):
    """The checkpoint exported for 64x64 inputs through the command."""
    path = checkpoint.with_name("small.onnx")
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(path), "--height",
                                 "64", "--width", "64"])
    assert result.exit_code == 0, result.output
    assert f"wrote {path}: MaskDINO, layers [0, 1, 2], input Bx3x64x64" in result.output
    return path


def image_folder(root, size: tuple[int, int]) -> str:
    """``images:DIR`` of two random RGB images of ``size`` (H, W)."""
    root.mkdir()
    generator = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        pixels = torch.randint(0, 256, (*size, 3), dtype=torch.uint8, generator=generator)
        Image.fromarray(pixels.numpy()).save(root / f"{name}.png")
    return f"images:{root}"


def test_exported_file_runs_in_the_probe_and_says_what_it_is(small_export, tmp_path):
    import onnx

    metadata = json.loads({p.key: p.value for p in onnx.load(str(small_export)).metadata_props}
                          ["dimask"])
    assert metadata["format"] == "dimask-onnx" and metadata["input_size"] == [64, 64]
    assert metadata["layers"] == [0, 1, 2] and metadata["model"] == "MaskDINO"
    assert metadata["config"]["data"]["test_short"] == 0
    data = image_folder(tmp_path / "images", (48, 64))
    result = runner.invoke(app, ["layer-probe", str(small_export), "--data", data, "--out",
                                 str(tmp_path / "probe"), "--quiet"])
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "probe" / "detections" / "layer2_segm.json").read_text())
    assert {d["image_id"] for d in found} == {1, 2}


def test_an_opset_without_grid_sample_is_one_line(checkpoint, tmp_path):
    line = one_line_error(["export", str(checkpoint), "--out", str(tmp_path / "m.onnx"),
                           "--opset", "15"])
    assert "GridSample" in line and "--opset 16" in line
    assert not (tmp_path / "m.onnx").exists()


def test_an_image_larger_than_the_export_is_one_line(small_export, tmp_path):
    data = image_folder(tmp_path / "images", (96, 64))
    line = one_line_error(["layer-probe", str(small_export), "--data", data, "--out",
                           str(tmp_path / "probe"), "--quiet"])
    assert "96x64 does not fit" in line and "64x64" in line


def test_a_file_that_is_not_onnx_is_one_line(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model at all")
    line = one_line_error(["eval", str(path), "--quiet"])
    assert f"{path} is not an ONNX model" in line


def test_an_onnx_model_that_is_not_dimasks_is_one_line(tmp_path):
    from onnx import TensorProto, helper, save

    tensor = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other", [tensor],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "other.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    line = one_line_error(["layer-probe", str(path), "--quiet"])
    assert "not one dimask exported" in line


def test_official_config_with_an_exported_model_is_one_line(small_export, tmp_path):
    line = one_line_error(["eval", str(small_export), "--official-config",
                           str(tmp_path / "official.yaml")])
    assert "carries its own config" in line
