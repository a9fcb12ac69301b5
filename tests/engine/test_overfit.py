"""The whole training stack can memorise two images (an end-to-end learning check).

The schedule converges decisively rather than just in time: 400 iterations with the learning
rate dropped x0.1 at 300. Measured AP50 at the end, bbox / segm, 3 seeds (``solver.seed``),
on an Intel Xeon with AMX and with 1 and 2 threads: 100 / 100 in every run (the closing note
of issue 21 lists them). With 200 iterations and no drop, as before, one of them stopped at
bbox AP50 75 (the failure the issue reported). With the box losses zeroed
(``loss.l1=0 loss.giou=0``) bbox AP50 stays far below the bound, so the test still catches
broken box learning.
"""

from __future__ import annotations

import pytest

from dimaskdino.config import apply_overrides, preset
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from dimaskdino.engine.trainer import Trainer


@pytest.mark.slow
@pytest.mark.trained
@pytest.mark.parametrize("model", ["dimaskdino", "maskdino"])
def test_two_images_are_learned_within_400_steps(tmp_path, model):
    paths = write_synthetic_dataset(tmp_path / "data", SyntheticSpec(
        num_train=2, num_val=1, height=128, width=128, max_objects=4, seed=5))
    annotations, images = paths["train"]
    config = apply_overrides(preset("tiny", model), [
        f"data.dataset=coco-json:{annotations}:{images}", "data.image_size=[128,128]",
        "data.min_scale=1.0",
        "data.max_scale=1.0", "data.test_short=0", "solver.batch_size=2",
        "solver.max_iter=400", "solver.steps=[300]", "solver.warmup_iters=20",
        "solver.checkpoint_period=0"])
    result = Trainer(config, tmp_path / "run", progress=False).run()
    assert result.metrics["segm"]["AP50"] >= 90
    assert result.metrics["bbox"]["AP50"] >= 90
