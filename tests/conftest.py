"""Shared fixtures, and a micro experiment (64 px images, two decoder layers) that trains
in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cpu_kernel_path() -> str:
    """Path of the compiled CPU kernel (built on first use)."""
    from dimaskdino.ops.build import load_cpu_extension

    return load_cpu_extension().__file__


@pytest.fixture(scope="session")
def golden_fixtures() -> Path:
    """The official implementation's golden outputs: ``$DIMASK_FIXTURES`` or ../shared/fixtures."""
    candidates = [os.environ.get("DIMASK_FIXTURES"), REPO.parent / "shared" / "fixtures"]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "README.md").exists():
            return Path(candidate)
    pytest.skip("golden fixtures not found: set DIMASK_FIXTURES to the shared fixtures folder "
                "(expected at ../shared/fixtures)")

MICRO = [
    "data.image_size=[64, 64]", "data.min_scale=0.8", "data.max_scale=1.2",
    "data.test_short=0", "data.test_batch_size=2",
    "data.synthetic.num_train=8", "data.synthetic.num_val=2", "data.synthetic.height=64",
    "data.synthetic.width=64", "data.synthetic.max_objects=3",
    "model.encoder.layers=1", "model.predictor.dec_layers=2", "model.predictor.num_queries=10",
    "model.predictor.first_selected_queries=20", "model.predictor.num_guiding_tokens=4",
    "solver.batch_size=2", "solver.max_iter=8", "solver.steps=[]", "solver.checkpoint_period=4",
    "solver.log_period=1", "loss.num_points=64", "model.backbone_weights=none",
]
# a pretraining of a few steps on a few small images: a second
QUICK_PRETRAIN = ["iterations=3", "batch_size=8", "warmup_iters=1", "data.num_train=24",
                  "data.num_val=12", "data.size=32", "data.min_radius=4", "data.max_radius=12"]


@pytest.fixture
def micro_overrides(tmp_path, monkeypatch):
    """The micro experiment's overrides; the synthetic data is cached under ``tmp_path``."""
    monkeypatch.setenv("DIMASK_CACHE", str(tmp_path / "cache"))
    return list(MICRO)


@pytest.fixture(autouse=True)
def quick_builtin_backbone(monkeypatch):
    """``model.backbone_weights=pretrained:tiny`` (the tiny preset's start) resolves to a
    backbone pretrained for three steps on a few small images (a second to build), not to
    the full recipe's minutes; tests/engine/test_pretrain.py covers the recipe's path."""
    from dimaskdino.config import apply_overrides
    from dimaskdino.engine import pretrain

    quick = apply_overrides(pretrain.recipe("tiny"), QUICK_PRETRAIN)
    monkeypatch.setitem(pretrain.RECIPES, "tiny", lambda: quick)
