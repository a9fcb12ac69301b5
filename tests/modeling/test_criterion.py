"""The criterion: every stage supervised, gradients flow, the loss-weight constraint."""

from __future__ import annotations

import torch

from dimaskdino.modeling.criterion import LossWeights, SetCriterion
from dimaskdino.modeling.matcher import HungarianMatcher
from dimaskdino.modeling.predictor import DIMaskDINOPredictor, PredictorConfig
from tests.modeling.encoded import encoded


def setup():
    torch.manual_seed(0)
    config = PredictorConfig(num_classes=4, hidden_dim=32, num_queries=6, dim_feedforward=64,
                             dec_layers=2, mask_dim=32, first_selected_queries=10,
                             ti_layers=2, num_guiding_tokens=3, dn_num=8)
    predictor = DIMaskDINOPredictor(config).train()
    maps = [torch.randn(2, 32, s, s) for s in (8, 4, 2, 1)]
    mask_features = torch.randn(2, 32, 16, 16)
    targets = []
    for n in (2, 3):
        masks = torch.zeros(n, 64, 64)
        for k in range(n):
            masks[k, 8 * k: 8 * k + 20, 10: 30 + 5 * k] = 1
        targets.append({"labels": torch.arange(n) % 4,
                        "boxes": torch.rand(n, 4) * 0.3 + 0.3, "masks": masks})
    return predictor, maps, mask_features, targets


def test_every_stage_is_supervised_and_gradients_flow():
    predictor, maps, mask_features, targets = setup()
    outputs = predictor(encoded(maps, mask_features), targets=targets)
    criterion = SetCriterion(4, HungarianMatcher(num_points=64), num_points=64)
    losses = criterion(outputs, targets)
    stages = {key.split("_", 1)[1] for key in losses if key != "loss"}
    assert stages == {"final", "interm", "layer0", "layer1", "di0", "di1", "dn0", "dn1", "dn2"}
    assert "mask_di0" not in losses and "mask_final" in losses  # DI: class + box only
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    # the box head's last layer starts at zero (official init), so its earlier layers get no
    # gradient at step 0; the last layer does
    for name in ("heads.class_embed.weight", "heads.bbox_embed.layers.2.weight",
                 "heads.mask_embed.layers.0.weight", "di.layers.0.linear1.weight",
                 "bato.feature_update.linear1.weight", "label_enc.weight",
                 "decoder.layers.0.cross_attn.sampling_offsets.weight"):
        grad = dict(predictor.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_loss_weight_constraint_scales_only_detection_terms():
    predictor, maps, mask_features, targets = setup()
    predictor.eval()
    with torch.no_grad():
        outputs = predictor(encoded(maps, mask_features))
    results = []
    for scale in (1.0, 0.1):
        torch.manual_seed(5)  # same random points for matching and mask losses
        criterion = SetCriterion(4, HungarianMatcher(num_points=64),
                                 LossWeights(detection_scale=scale), num_points=64)
        results.append(criterion(outputs, targets))
    full, constrained = results
    for key, value in full.items():
        if key == "loss":
            continue
        factor = 0.1 if key.startswith(("l1_", "giou_")) else 1.0
        torch.testing.assert_close(constrained[key], value * factor)
    assert LossWeights().of("class") == 4.0 and LossWeights(detection_scale=0.1).of("giou") == 0.2


def test_per_image_generators_make_the_loss_additive_over_images():
    """With a generator per image (as the trainer seeds them), an image's random points and
    denoising noise do not depend on its batch-mates: the loss of a batch is the sum of its
    images' losses under one normalization. This is what makes N DDP processes with batch b
    equal one process with batch N * b."""
    predictor, maps, mask_features, targets = setup()
    targets[0]["masks"] = targets[0]["masks"][:2]
    targets[1] = {k: v[:2] for k, v in targets[1].items()}   # equal counts: same DN groups
    criterion = SetCriterion(4, HungarianMatcher(num_points=64), num_points=64)

    def run(images: list[int]) -> torch.Tensor:
        seeded = [{**targets[i], "generator": torch.Generator().manual_seed(10 + i)}
                  for i in images]
        outputs = predictor(encoded([m[images] for m in maps], mask_features[images]),
                            targets=seeded)
        return criterion(outputs, seeded, num_objects=4.0)["loss"]

    together = run([0, 1])
    torch.testing.assert_close(together, run([0]) + run([1]), rtol=1e-5, atol=1e-5)
