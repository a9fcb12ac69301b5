"""The criterion: every stage supervised, gradients flow, the loss-weight constraint."""

from __future__ import annotations

import torch

from dimaskdino.modeling.criterion import LossWeights, SetCriterion
from dimaskdino.modeling.losses import (
    box_losses,
    draw_point_candidates,
    focal_loss,
    mask_terms,
    select_uncertain_points,
)
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


def per_stage_loop(criterion: SetCriterion, outputs: dict, targets: list[dict],
                   num_objects: float) -> dict[str, torch.Tensor]:
    """The criterion as a plain loop (the reference for its batched form): each stage
    matched on its own, each image's loss points drawn and sampled on their own, the
    denoising targets repeated per group."""
    stages = {"final": outputs["layers"][-1], "interm": outputs["interm"]}
    stages.update({f"layer{i}": layer for i, layer in enumerate(outputs["layers"][:-1])})
    stages.update({f"di{i}": aux for i, aux in enumerate(outputs["di"]["aux"])})
    dn = outputs["denoising"]["queries"]
    repeated = [{k: v.repeat(dn.groups, *([1] * (v.dim() - 1))) if torch.is_tensor(v) else v
                 for k, v in t.items()} for t in targets]
    dn_indices = [(torch.cat([torch.arange(len(t["labels"])) + g * dn.group_size
                              for g in range(dn.groups)]),
                   torch.arange(dn.groups * len(t["labels"]))) for t in targets]
    jobs = [(name, stage, targets, None, num_objects) for name, stage in stages.items()]
    jobs += [(f"dn{i}", layer, repeated, dn_indices, num_objects * dn.groups)
             for i, layer in enumerate(outputs["denoising"]["layers"])]
    losses = {}
    for name, stage, stage_targets, given, norm in jobs:
        masked = stage.get("pred_masks") is not None
        indices = given or criterion.matcher(stage, stage_targets, use_masks=masked)
        terms = {}
        batch = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)])
        query = torch.cat([q for q, _ in indices])
        matched = [{k: t[k][j] for k in ("labels", "boxes", "masks")}
                   for t, (_, j) in zip(stage_targets, indices, strict=True)]
        classes = torch.zeros_like(stage["pred_logits"])
        classes[batch, query, torch.cat([m["labels"] for m in matched])] = 1
        terms["class"] = focal_loss(stage["pred_logits"], classes, norm)
        terms["l1"], terms["giou"] = box_losses(stage["pred_boxes"][batch, query],
                                                torch.cat([m["boxes"] for m in matched]), norm)
        if masked:
            pred = stage["pred_masks"][batch, query]
            with torch.no_grad():
                points = torch.cat([select_uncertain_points(part, *draw_point_candidates(
                    len(part), 64, generator=t["generator"]), 64) for t, part in zip(
                        stage_targets, pred.split([len(q) for q, _ in indices]), strict=True)])
            bce, dice = mask_terms(pred, torch.cat([m["masks"] for m in matched]), points)
            terms["mask"], terms["dice"] = bce.sum() / norm, dice.sum() / norm
        losses.update({f"{term}_{name}": value * criterion.weights.of(term)
                       for term, value in terms.items()})
    return losses


def test_batched_criterion_equals_the_per_stage_per_image_loop():
    """Drawing every point first (in the loop's order, from each image's generator),
    matching equal-shape stages in one batch and scoring all masks in one batch changes no
    loss term and no gradient."""
    predictor, maps, mask_features, targets = setup()

    def run(loss_of) -> tuple[dict, list]:
        seeded = [{**t, "generator": torch.Generator().manual_seed(20 + i)}
                  for i, t in enumerate(targets)]
        torch.manual_seed(3)
        outputs = predictor(encoded(maps, mask_features), targets=seeded)
        losses = loss_of(outputs, seeded)
        predictor.zero_grad()
        sum(v for k, v in losses.items() if k != "loss").backward()
        return losses, [p.grad.clone() for p in predictor.parameters() if p.grad is not None]

    criterion = SetCriterion(4, HungarianMatcher(num_points=64), num_points=64)
    batched, batched_grads = run(lambda o, t: criterion(o, t, 5.0))
    looped, looped_grads = run(lambda o, t: per_stage_loop(criterion, o, t, 5.0))
    assert batched.keys() - {"loss"} == looped.keys()
    for key, value in looped.items():
        torch.testing.assert_close(batched[key], value, rtol=1e-6, atol=1e-7, msg=key)
    assert len(batched_grads) == len(looped_grads)
    for a, b in zip(batched_grads, looped_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
