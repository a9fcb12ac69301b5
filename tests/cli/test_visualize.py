"""``dimask visualize``: per image one PNG of one panel per layer and a self-contained index,
on a trained tiny checkpoint and on an official golden-fixture checkpoint; bad input is one
line, exit 1, nothing written."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dimaskdino.cli import app
from dimaskdino.config import apply_overrides, preset
from dimaskdino.engine.trainer import Trainer
from tests.cli.test_training_cli import one_line_error
from tests.conftest import MICRO

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The micro experiment (the tiny preset, a few iterations) trained on synthetic data."""
    root = tmp_path_factory.mktemp("visualize")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIMASK_CACHE", str(root / "cache"))
        config = apply_overrides(preset("tiny"), MICRO)
        result = Trainer(config, root / "run", progress=False).run()
    return result.checkpoint, root / "cache"


def _panels(png: bytes) -> list[np.ndarray]:
    """The panels of a figure: the runs of non-white columns across its middle rows."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    height = pixels.shape[0]
    band = pixels[int(height * 0.35):int(height * 0.55)]
    drawn = (band < 250).any(axis=2).any(axis=0)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], drawn.astype(int), [0]])))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a > 50]
    return [band[:, a:b] for a, b in runs]


def _invoke(*args):
    result = runner.invoke(app, ["visualize", *map(str, args), "--quiet"])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_two_images_two_layers(checkpoint, tmp_path, monkeypatch):
    path, cache = checkpoint
    monkeypatch.setenv("DIMASK_CACHE", str(cache))
    out = tmp_path / "pictures"
    result = _invoke(path, "--layers", "0,last", "--count", 2, "--score-threshold", 0,
                     "--out", out, "--svg")
    assert f"written: {out / 'index.html'}" in result.output.replace("\n", "")
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == ["000000", "000001"]
    assert sorted(p.stem for p in out.glob("*.svg")) == ["000000", "000001"]
    for png in pngs:
        panels = _panels(png.read_bytes())
        assert len(panels) == 2
        first, last = panels
        assert abs(first.shape[1] - last.shape[1]) <= 2
        width = min(first.shape[1], last.shape[1])
        assert np.abs(first[:, :width] - last[:, :width]).mean() > 1.0
    page = (out / "index.html").read_text()
    assert "http" not in page.replace("http-equiv", "")     # nothing to fetch
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(data) for data in embedded] == [p.read_bytes() for p in pngs]


def test_official_checkpoint_on_bare_images(golden_fixtures, tmp_path):
    fixture = golden_fixtures / "dimaskdino_tiny"
    inputs = torch.load(fixture / "inputs.pt", weights_only=True)
    folder = tmp_path / "images"
    folder.mkdir()
    for k, image in enumerate(inputs["images"]):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"im{k}.png")
    out = tmp_path / "out"
    _invoke(fixture / "state_dict.pt", "--official-config", fixture / "config.yaml",
            "--images", folder, "--layers", "0,1,last", "--score-threshold", 0,
            "--out", out)
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == ["im0", "im1"]
    assert all(len(_panels(p.read_bytes())) == 3 for p in pngs)


def _fails_writing_nothing(out, *args) -> str:
    line = one_line_error(["visualize", *map(str, args), "--out", str(out), "--quiet"])
    assert not out.exists()
    return line


def test_errors_are_one_line_and_write_nothing(golden_fixtures, tmp_path):
    fixture = golden_fixtures / "maskdino_tiny"
    official = [fixture / "state_dict.pt", "--official-config", fixture / "config.yaml"]
    out = tmp_path / "out"
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "good.png")
    line = _fails_writing_nothing(out, *official, "--images", images, "--layers", "12")
    assert "no layer '12'; this model has layers 0..3" in line
    (images / "broken.png").write_bytes(b"not an image")
    line = _fails_writing_nothing(out, *official, "--images", images)
    assert f"cannot read image {images / 'broken.png'}" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"no JPEG or PNG images in {empty}" in _fails_writing_nothing(
        out, *official, "--images", empty)
    assert f"no JPEG or PNG images in {empty}" in _fails_writing_nothing(
        out, *official, "--data", f"images:{empty}")
    assert "checkpoint not found" in _fails_writing_nothing(out, tmp_path / "none.pth")
    assert "precision 'fp16' is not supported; choose one of auto, fp32, bf16" in \
        _fails_writing_nothing(out, *official, "--images", empty, "--precision", "fp16")
