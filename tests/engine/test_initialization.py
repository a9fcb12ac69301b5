"""Starting weights: ImageNet backbones and whole models (dimask or official checkpoints of
another class count) survive one iteration at learning rate 0 exactly; two gloo processes
start from identical weights, read by the main process only."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torchvision
import yaml
from typer.testing import CliRunner

from dimaskdino.checkpoint import CheckpointError, convert_official_state_dict
from dimaskdino.cli import app
from dimaskdino.config import apply_overrides, config_to_dict, preset
from dimaskdino.engine.checkpointer import read_checkpoint, save_checkpoint
from dimaskdino.engine.initialization import CLASS_DEPENDENT, load_starting_weights
from dimaskdino.modeling.backbone import ResNet, SwinTransformer
from dimaskdino.modeling.model import DIMaskDINO
from tests.conftest import MICRO, REPO

runner = CliRunner()
# one iteration at learning rate 0: AdamW's decoupled decay is lr * wd, so nothing moves
STILL = ["solver.lr=0", "solver.max_iter=1", "solver.checkpoint_period=0"]
RUN = [item for item in MICRO if not item.startswith("model.")] + STILL  # data, solver, loss
# the r50 presets' model, narrow (bottleneck width 8, as the golden fixtures) and small
R50_MICRO = [*MICRO, *STILL, "data.dataset=synthetic", "model.predictor.num_classes=6",
             "model.backbone.width_per_group=8", "model.encoder.conv_dim=64",
             "model.encoder.mask_dim=64", "model.encoder.dim_feedforward=128",
             "model.predictor.hidden_dim=64", "model.predictor.mask_dim=64",
             "model.predictor.dim_feedforward=128", "model.predictor.dn_num=10"]
CLASS_LINE = ("re-initialised for 6 classes (the checkpoint has 8): "
              "predictor.heads.class_embed.weight (class head), "
              "predictor.heads.class_embed.bias (class head), "
              "predictor.label_enc.weight (denoising label embedding)")


def train(args: list[str]):
    result = runner.invoke(app, ["train", "--quiet", *args])
    assert result.exit_code == 0, result.output
    return result


def perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """``model``'s state with noise on every tensor, so that no tensor equals a fresh
    initialisation (zero-initialised box-head layers included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.add_(0.01 * torch.randn(tensor.shape, generator=generator))
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_class_dependent_tensors_are_those_whose_shape_follows_the_class_count():
    def shapes(classes: int) -> dict:
        config = apply_overrides(preset("tiny"), [*MICRO, "model.predictor.num_guiding_tokens=4",
                                                  "model.predictor.extra_selected_queries=[15]",
                                                  f"model.predictor.num_classes={classes}"])
        return {k: v.shape for k, v in DIMaskDINO(config.model).state_dict().items()}

    six, seven = shapes(6), shapes(7)
    assert {k for k in six if six[k] != seven[k]} == set(CLASS_DEPENDENT)


def torchvision_resnet50_file(path) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-50 (bottleneck width 8) with random values everywhere."""
    model = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3],
                                      width_per_group=8)
    generator = torch.Generator().manual_seed(3)
    state = model.state_dict()
    with torch.no_grad():
        for key, tensor in state.items():
            if key.endswith("running_var"):
                tensor.uniform_(0.5, 1.5, generator=generator)
            elif tensor.is_floating_point():
                tensor.normal_(0, 0.1, generator=generator)
    torch.save(state, path)
    return state


def detectron2_name(key: str) -> str:
    """torchvision's ResNet name -> detectron2's (``layer1.0.bn2.weight`` ->
    ``res2.0.conv2.norm.weight``), spelled out as an independent reference."""
    parts = key.split(".")
    if parts[0] == "conv1":
        return f"stem.conv1.{parts[1]}"
    if parts[0] == "bn1":
        return f"stem.conv1.norm.{parts[1]}"
    stage, block, layer = f"res{int(parts[0][-1]) + 1}", parts[1], parts[2]
    if layer == "downsample":
        return f"{stage}.{block}.shortcut.{'' if parts[3] == '0' else 'norm.'}{parts[4]}"
    norm = "norm." if layer.startswith("bn") else ""
    return f"{stage}.{block}.conv{layer[-1]}.{norm}{parts[3]}"


@pytest.mark.parametrize("layout", ["torchvision", "detectron2"])
def test_backbone_weights_are_the_files_after_an_iteration_at_lr_0(tmp_path, micro_overrides,
                                                                   layout):
    if layout == "torchvision":
        path = tmp_path / "resnet50.pth"
        expected = {f"backbone.{detectron2_name(k)}": v for k, v in
                    torchvision_resnet50_file(path).items()
                    if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    else:  # detectron2 names, as detectron2 converts torchvision's weights
        path = tmp_path / "R-50.pkl"
        config = apply_overrides(preset("r50-coco-12ep"), R50_MICRO).model.backbone
        generator = torch.Generator().manual_seed(4)
        blobs = {k: (0.5 + torch.rand(v.shape, generator=generator) if k.endswith("running_var")
                     else 0.1 * torch.randn(v.shape, generator=generator)).numpy()
                 for k, v in ResNet(config).state_dict().items()}
        path.write_bytes(pickle.dumps(
            {"model": blobs, "__author__": "torchvision", "matching_heuristics": True}))
        expected = {f"backbone.{k}": torch.from_numpy(v) for k, v in blobs.items()}
    run = tmp_path / "run"
    result = train(["--preset", "r50-coco-12ep", "--out", str(run), *R50_MICRO,
                    f"model.backbone_weights={path}"])
    assert f"backbone initialised from {path} (torchvision layout" in result.stderr
    saved = read_checkpoint(run / "model_final.pth")
    assert saved["config"]["model"]["backbone_weights"] == str(path)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["backbone_weights"] == \
        str(path)
    backbone = {k: v for k, v in saved["model"].items() if k.startswith("backbone.")}
    assert backbone.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(backbone[key], value), key
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [1]


def test_init_from_a_dimask_checkpoint_of_another_class_count(tmp_path, micro_overrides):
    source_config = apply_overrides(preset("tiny"), [*MICRO, "model.predictor.num_classes=8"])
    torch.manual_seed(1)
    source = DIMaskDINO(source_config.model)
    weights = perturbed(source, 5)
    path = save_checkpoint(tmp_path, "source.pth", model=source, optimizer=None,
                           iteration=100, config=config_to_dict(source_config))
    run = tmp_path / "run"
    # the tiny preset's own model (3 decoder layers, 30 queries) gives way to the checkpoint's
    result = train(["--init-from", str(path), "--out", str(run), *RUN])
    assert f"initialised from {path}: {len(weights) - 3} tensors loaded; {CLASS_LINE}" in \
        result.stderr
    saved = read_checkpoint(run / "model_final.pth")
    model = saved["config"]["model"]
    assert (model["predictor"]["num_classes"], model["predictor"]["dec_layers"],
            model["weights"]) == (6, 2, str(path))
    assert saved["model"].keys() == weights.keys()
    for key, value in weights.items():
        if key in CLASS_DEPENDENT:
            assert saved["model"][key].shape[0] == 6, key
        else:
            assert torch.equal(saved["model"][key], value), key


def test_init_from_the_official_golden_checkpoint(tmp_path, micro_overrides, golden_fixtures):
    folder = golden_fixtures / "dimaskdino_tiny"
    official = convert_official_state_dict(
        torch.load(folder / "state_dict.pt", weights_only=True))
    run = tmp_path / "run"
    result = train(["--init-from", str(folder / "state_dict.pt"), "--official-config",
                    str(folder / "config.yaml"), "--out", str(run), *RUN])
    assert CLASS_LINE in result.stderr
    saved = read_checkpoint(run / "model_final.pth")["model"]
    assert saved.keys() == official.keys()
    for key, value in official.items():
        if key in CLASS_DEPENDENT:
            assert value.shape[0] == 8 and saved[key].shape[0] == 6, key
        else:
            assert torch.equal(saved[key], value.float()), key


def test_whole_model_weights_must_fit_the_architecture_and_its_input(tmp_path):
    config = apply_overrides(preset("tiny"), MICRO)
    path = save_checkpoint(tmp_path, "source.pth", model=DIMaskDINO(config.model),
                           optimizer=None, iteration=0, config=config_to_dict(config))
    deeper = apply_overrides(config, ["model.predictor.dec_layers=3", f"model.weights={path}"])
    with pytest.raises(CheckpointError, match=r"0 unexpected .* --init-from takes"):
        load_starting_weights(DIMaskDINO(deeper.model))
    bgr = apply_overrides(config, ["model.pixel_mean=[103.53, 116.28, 123.675]",
                                   f"model.weights={path}"])
    with pytest.raises(CheckpointError, match=r"trained with model.pixel_mean=\[123.675, "
                                              r"116.28, 103.53\], which the model does not"):
        load_starting_weights(DIMaskDINO(bgr.model))


SCRIPT = """
import sys
from pathlib import Path

import torch

from dimaskdino.checkpoint import CheckpointError
from dimaskdino.config import apply_overrides, preset
from dimaskdino.engine import distributed, initialization
from dimaskdino.modeling.model import DIMaskDINO

out, overrides = Path(sys.argv[1]), sys.argv[2:]
reads = []
real = initialization.load_starting_weights
initialization.load_starting_weights = lambda model: reads.append(1) or real(model)
distributed.init_from_environment()
rank = distributed.rank()
torch.manual_seed(rank)  # each process initialises differently
model = DIMaskDINO(apply_overrides(preset("tiny"), overrides).model)
initialization.initialize_model(model)
torch.save({"state": model.state_dict(), "reads": len(reads)}, out / f"rank{rank}.pt")
missing = apply_overrides(preset("tiny"), [*overrides, f"model.weights={out / 'none.pth'}"])
try:
    initialization.initialize_model(DIMaskDINO(missing.model))
except CheckpointError as exc:
    (out / f"error{rank}.txt").write_text(str(exc))
distributed.shutdown()
"""


@pytest.mark.slow
def test_two_gloo_processes_start_from_the_main_processes_weights(tmp_path):
    source_config = apply_overrides(preset("tiny"), [*MICRO, "model.predictor.num_classes=8"])
    source = DIMaskDINO(source_config.model)
    weights = perturbed(source, 6)
    path = save_checkpoint(tmp_path, "source.pth", model=source, optimizer=None,
                           iteration=0, config=config_to_dict(source_config))
    script = tmp_path / "start.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", "29519", str(script), str(tmp_path), *MICRO,
         f"model.weights={path}"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                          os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 0, done.stderr
    main, other = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (main["reads"], other["reads"]) == (1, 0)
    assert main["state"].keys() == other["state"].keys() == weights.keys()
    for key, value in main["state"].items():
        assert torch.equal(other["state"][key], value), key
        if key not in CLASS_DEPENDENT:
            assert torch.equal(value, weights[key]), key
    errors = {(tmp_path / f"error{r}.txt").read_text() for r in (0, 1)}
    assert errors == {f"checkpoint not found: {tmp_path / 'none.pth'}"}


def test_swin_backbone_weights_load_through_model_backbone_weights(tmp_path):
    """``model.backbone_weights`` of a Swin model reads the Swin repository's layout."""
    from tests.checkpoint.test_checkpoint import SWIN, assert_swin_loaded, swin_repo_state

    torch.manual_seed(3)
    source = SwinTransformer(SWIN)
    path = tmp_path / "swin.pth"
    torch.save({"model": swin_repo_state(source)}, path)
    config = preset("tiny")
    config.model = dataclasses.replace(config.model, backbone=SWIN, backbone_weights=str(path))
    model = DIMaskDINO(config.model)
    assert load_starting_weights(model).startswith(f"backbone initialised from {path} (Swin")
    assert_swin_loaded(model.backbone, source)
