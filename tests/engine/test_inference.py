"""Inference in a chosen precision, and over an evaluation dataset."""

import pytest
import torch

from dimaskdino.config import ConfigError, preset
from dimaskdino.data.coco import CocoInstances
from dimaskdino.data.loader import EvaluationImages
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from dimaskdino.engine.inference import predict, predictions
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


def _autocast_seen(model, precision: str) -> list[tuple[bool, bool]]:
    """(autocast on, input channels-last) as the backbone saw them in one ``predict``."""
    seen = []
    hook = model.backbone.register_forward_pre_hook(lambda _, args: seen.append((
        torch.is_autocast_enabled("cpu"),
        args[0].is_contiguous(memory_format=torch.channels_last) and not
        args[0].is_contiguous())))
    try:
        pred = predict(model, [torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)],
                       all_layers=True, precision=precision)
    finally:
        hook.remove()
    assert all(t.dtype == torch.float32 for layer in pred.layers for t in layer.values())
    assert all(t.dtype != torch.bfloat16 for t in pred.instances[0].values())
    return seen


def test_predict_precision_fp32_is_exact_and_bf16_autocasts():
    torch.manual_seed(0)
    model = DIMaskDINO(preset("tiny").model).eval()
    assert _autocast_seen(model, "fp32") == [(False, False)]
    assert _autocast_seen(model, "bf16") == [(True, True)]
    image = [torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)]
    default, exact = model.predict(image), predict(model, image, precision="fp32")
    assert torch.equal(default.instances[0]["scores"], exact.instances[0]["scores"])
    with pytest.raises(ConfigError, match="precision 'half' is not supported"):
        predict(model, image, precision="half")
