"""The whole training stack can memorise two images (a end-to-end learning check)."""

from __future__ import annotations

import pytest

from dimaskdino.config import apply_overrides, preset
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from dimaskdino.engine.trainer import Trainer


@pytest.mark.slow
@pytest.mark.trained
@pytest.mark.parametrize("model", ["dimaskdino", "maskdino"])
def test_two_images_are_learned_within_300_steps(tmp_path, model):
    paths = write_synthetic_dataset(tmp_path / "data", SyntheticSpec(
        num_train=2, num_val=1, height=128, width=128, max_objects=4, seed=5))
    annotations, images = paths["train"]
    config = apply_overrides(preset("tiny", model), [
        f"data.dataset=coco-json:{annotations}:{images}", "data.min_scale=1.0",
        "data.max_scale=1.0", "data.test_short=0", "solver.batch_size=2",
        "solver.max_iter=200", "solver.steps=[1000]", "solver.warmup_iters=20",
        "solver.checkpoint_period=0"])
    result = Trainer(config, tmp_path / "run", progress=False).run()
    assert result.metrics["segm"]["AP50"] >= 90
    assert result.metrics["bbox"]["AP50"] >= 90
