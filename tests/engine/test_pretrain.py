"""Classification pretraining: ``dimask pretrain`` writes a torchvision-layout backbone that
``model.backbone_weights`` loads exactly; ``pretrained:NAME`` builds it once and caches it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from dimaskdino.checkpoint import (
    detectron2_to_torchvision,
    read_backbone_weights,
    torchvision_to_detectron2,
)
from dimaskdino.cli import app
from dimaskdino.config import apply_overrides, preset
from dimaskdino.engine import pretrain as pretraining
from dimaskdino.engine.checkpointer import read_checkpoint
from dimaskdino.engine.trainer import Trainer
from dimaskdino.modeling.backbone.resnet import ResNet, ResNetConfig
from tests.conftest import MICRO
from tests.conftest import QUICK_PRETRAIN as QUICK

runner = CliRunner()


def test_detectron2_names_are_torchvisions():
    state = ResNet(ResNetConfig(depth=50)).state_dict()
    names = detectron2_to_torchvision(state)
    reference = {k for k in torchvision.models.resnet50().state_dict()
                 if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert set(names) == reference
    assert torchvision_to_detectron2(names).keys() == state.keys()


def test_pretrain_cli_writes_a_torchvision_backbone(tmp_path):
    out = tmp_path / "bb.pth"
    result = runner.invoke(app, ["pretrain", "--quiet", "--out", str(out), *QUICK])
    assert result.exit_code == 0, result.output
    assert "held-out top-1" in result.output and str(out) in result.output
    saved = torch.load(out, weights_only=True)
    assert {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.weight"} <= set(saved)
    weights, layout = read_backbone_weights(out)
    backbone = ResNet(preset("tiny").model.backbone)
    assert layout == "torchvision" and weights.keys() == backbone.state_dict().keys()


def test_pretrain_bad_input_is_one_line(tmp_path):
    for args in (["--preset", "nope"], ["iterations=x"], QUICK):  # the last: no --out
        result = runner.invoke(app, ["pretrain", "--quiet", *args])
        assert result.exit_code == 1 and result.output.startswith("error: "), result.output
        assert len(result.output.strip().splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["pretrain", "--quiet", "--out", str(blocker / "bb.pth"),
                                 *QUICK])
    assert result.exit_code == 1 and "cannot write" in result.output


def test_interrupted_pretraining_leaves_no_file(tmp_path, monkeypatch):
    calls = []

    def interrupt_second_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return torch.nn.functional.cross_entropy(*args, **kwargs)

    monkeypatch.setattr(pretraining.F, "cross_entropy", interrupt_second_step)
    out = tmp_path / "bb.pth"
    result = runner.invoke(app, ["pretrain", "--quiet", "--out", str(out), *QUICK])
    assert result.exit_code == 130 and result.output.startswith("interrupted: ")
    assert list(tmp_path.iterdir()) == []


def test_backbone_weights_load_exactly(tmp_path, monkeypatch):
    """The file through ``model.backbone_weights``: after one iteration at learning rate 0
    every backbone tensor of the checkpoint equals the file's."""
    out = tmp_path / "bb.pth"
    pretraining.pretrain(apply_overrides(pretraining.recipe("tiny"), QUICK), out, False)
    monkeypatch.setenv("DIMASK_CACHE", str(tmp_path / "cache"))
    config = apply_overrides(preset("tiny", "maskdino"), [
        *MICRO, f"model.backbone_weights={out}", "solver.lr=0", "solver.max_iter=1",
        "solver.warmup_iters=1"])
    result = Trainer(config, tmp_path / "run", progress=False).run()
    model = read_checkpoint(result.checkpoint)["model"]
    weights, _ = read_backbone_weights(out)
    assert len(weights) > 0
    for key, value in weights.items():
        assert torch.equal(model[f"backbone.{key}"], value), key


def test_builtin_backbone_is_built_once_and_keeps_the_random_state(tmp_path, monkeypatch):
    quick = apply_overrides(pretraining.recipe("tiny"), QUICK)
    monkeypatch.setitem(pretraining.RECIPES, "tiny", lambda: dataclasses.replace(quick))
    monkeypatch.setenv("DIMASK_CACHE", str(tmp_path))
    lines = []
    torch.manual_seed(123)
    state = torch.get_rng_state()
    path = pretraining.resolve_backbone_weights("pretrained:tiny", lines.append, False)
    assert torch.equal(torch.get_rng_state(), state)
    assert path == str(pretraining.builtin_path("tiny")) and path.startswith(str(tmp_path))
    assert len(lines) == 2 and "pretraining the tiny backbone" in lines[0]
    assert pretraining.resolve_backbone_weights("pretrained:tiny", lines.append) == path
    assert len(lines) == 2  # cached: nothing built, nothing said
    assert pretraining.resolve_backbone_weights("w.pth") == "w.pth"
    with pytest.raises(ValueError, match="unknown pretraining preset 'r9'"):
        pretraining.resolve_backbone_weights("pretrained:r9")
