"""Running a model over an evaluation dataset."""

import torch

from dimaskdino.config import preset
from dimaskdino.data.coco import CocoInstances
from dimaskdino.data.loader import EvaluationImages
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from dimaskdino.engine.inference import predictions
from dimaskdino.modeling.model import DIMaskDINO


def test_predictions_leave_the_callers_grad_mode_alone(tmp_path):
    """Without gradients inside, but not around the yield: two generators zipped together
    (or any code between two batches) run in the caller's mode."""
    paths = write_synthetic_dataset(tmp_path, SyntheticSpec(num_train=1, num_val=2, height=64,
                                                            width=64, max_objects=2))
    dataset = EvaluationImages(CocoInstances(*paths["val"]), 0)
    torch.manual_seed(0)
    model = DIMaskDINO(preset("tiny").model)
    for _, prediction in predictions(model, dataset, progress=False):
        assert torch.is_grad_enabled()
        assert not prediction.instances[0]["scores"].requires_grad
    assert model.training
