"""``dimask run-ablation``: dry run and one-line errors (nothing trains here)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dimaskdino.cli import app
from dimaskdino.cli import studies as studies_cli
from tests.experiments.test_registry import PAPER

runner = CliRunner()


def test_dry_run_lists_cells_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(studies_cli.console, "width", 200)
    result = runner.invoke(app, ["run-ablation", "selection-count", "--dry-run", "--seeds", "2",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for text in ("single-300", "double-600-300", "triple-600-450-300", "0,1", "0/2",
                 "extra_selected_queries=[45]", "first_selected_queries=60"):
        assert text in result.stdout
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "selection-count").exists()


@pytest.mark.parametrize("args, message", [
    (["nope"], "unknown study 'nope'"),
    (["gtg", "--scale", "huge"], "unknown scale 'huge'"),
    (["gtg", "--scale", "small", "--data", "nope:x", "--set", "model.backbone_weights=none"],
     "unknown dataset spec 'nope:x'"),
    (["gtg", "--scale", "small"], "needs --data"),
    (["gtg", "--data", "coco:x"], "tiny scale trains on the synthetic data"),
    (["gtg", "--executor", "cloud"], "unknown executor 'cloud'"),
    (["gtg", "--set", "solver.nope=1"], "unknown config key 'solver.nope'"),
    (["gtg", "--seeds", "0"], "--seeds must be at least 1"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, args, message):
    result = runner.invoke(app, ["run-ablation", *args, "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize("study", sorted(PAPER))
def test_dry_run_of_every_study_prints_the_papers_cells(tmp_path, monkeypatch, study):
    monkeypatch.setattr(studies_cli.console, "width", 250)
    result = runner.invoke(app, ["run-ablation", study, "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    for cell, (model, bdd, coco) in PAPER[study].items():
        (row,) = [r for r in rows if r.split("│")[1].strip() == cell]
        assert model in row
        for dataset, ap in (("bdd100k", bdd), ("coco", coco)):
            if ap is not None:
                assert f"{dataset} {ap[0]:.1f}/{ap[1]:.1f}" in row
    named = {r.split("│")[1].strip() for r in rows} - {"cell", ""}
    assert named == set(PAPER[study])


@pytest.mark.parametrize("args", [
    ["modules", "--scale", "small", "--data", "synthetic"],
    ["imbalance-tolerance", "--scale", "paper", "--data", "bdd100k:missing/bdd100k"],
])
def test_small_and_paper_scales_need_backbone_weights(tmp_path, monkeypatch, args):
    """One line naming the paper's file and how to pass it; nothing written (the synthetic
    data not generated either), the dataset not even looked at."""
    monkeypatch.setenv("DIMASK_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["run-ablation", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the r50-"), lines
    assert "detectron2://ImageNetPretrained/torchvision/R-50.pkl" in lines[0]
    assert "--set model.backbone_weights=PATH" in lines[0]
    assert "--set model.backbone_weights=none" in lines[0]
    assert list(tmp_path.iterdir()) == []
