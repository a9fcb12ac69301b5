"""Hungarian matcher: cost terms against direct per-pair formulas, assignment vs brute force."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import generalized_box_iou, generalized_box_iou_loss

from dimaskdino.modeling.box_ops import box_cxcywh_to_xyxy
from dimaskdino.modeling.matcher import (
    HungarianMatcher,
    padded_targets,
    pairwise_giou,
    point_sample,
)


def random_problem(seed: int, queries: int = 5, objects: int = 3, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(1, queries, classes, generator=g, dtype=torch.float64),
        "pred_boxes": torch.rand(1, queries, 4, generator=g, dtype=torch.float64) * 0.4 + 0.2,
        "pred_masks": torch.randn(1, queries, 12, 16, generator=g, dtype=torch.float64),
    }
    target = {
        "labels": torch.randint(0, classes, (objects,), generator=g),
        "boxes": torch.rand(objects, 4, generator=g, dtype=torch.float64) * 0.4 + 0.2,
        "masks": (torch.rand(objects, 24, 32, generator=g) > 0.5).double(),
    }
    return outputs, target


def test_cost_terms_equal_direct_formulas():
    outputs, target = random_problem(0)
    matcher = HungarianMatcher(num_points=50)
    logits, boxes, masks = (outputs[k][0] for k in ("pred_logits", "pred_boxes", "pred_masks"))
    cost = matcher.cost_matrix(logits, boxes, masks, target, torch.Generator().manual_seed(7))
    points = torch.rand(50, 2, generator=torch.Generator().manual_seed(7)).double()
    pred, gt = point_sample(masks, points), point_sample(target["masks"], points)
    for i, j in itertools.product(range(5), range(3)):
        p = logits[i, target["labels"][j]].sigmoid()
        focal = 0.25 * (1 - p) ** 2 * -(p + 1e-8).log() - 0.75 * p**2 * -(1 - p + 1e-8).log()
        l1 = (boxes[i] - target["boxes"][j]).abs().sum()
        # torchvision's loss adds eps=1e-7 to its denominators: agreement to ~1e-7
        giou = 1 - generalized_box_iou_loss(box_cxcywh_to_xyxy(boxes[i]),
                                            box_cxcywh_to_xyxy(target["boxes"][j]))
        bce = F.binary_cross_entropy_with_logits(pred[i], gt[j])
        prob = pred[i].sigmoid()
        dice = 1 - (2 * (prob * gt[j]).sum() + 1) / (prob.sum() + gt[j].sum() + 1)
        want = 4 * focal + 5 * l1 - 2 * giou + 5 * bce + 5 * dice
        torch.testing.assert_close(cost[i, j], want, rtol=0, atol=1e-6)


def test_point_sample_reads_pixel_centres():
    masks = torch.arange(12.0).view(1, 3, 4)
    points = torch.tensor([[(2 + 0.5) / 4, (1 + 0.5) / 3]])
    assert point_sample(masks, points).item() == masks[0, 1, 2].item()


@pytest.mark.parametrize("seed", range(8))
def test_assignment_is_the_brute_force_optimum(seed):
    outputs, target = random_problem(seed)
    matcher = HungarianMatcher(num_points=64)
    generator = torch.Generator().manual_seed(seed)
    (rows, cols), = matcher(outputs, [target], generator=generator)
    cost = matcher.cost_matrix(outputs["pred_logits"][0], outputs["pred_boxes"][0],
                               outputs["pred_masks"][0], target,
                               torch.Generator().manual_seed(seed))
    best = min(sum(cost[q, j].item() for j, q in enumerate(choice))
               for choice in itertools.permutations(range(5), 3))
    assert len(rows) == 3 and sorted(cols.tolist()) == [0, 1, 2]
    assert abs(cost[rows, cols].sum().item() - best) < 1e-9


def random_batch(seed: int, counts: tuple[int, ...], stages: int = 3, queries: int = 6,
                 classes: int = 4):
    """``stages`` stage outputs of one batch (float64) and targets with ``counts`` objects."""
    g = torch.Generator().manual_seed(seed)
    batch = len(counts)
    outputs = [{"pred_logits": torch.randn(batch, queries, classes, generator=g,
                                           dtype=torch.float64),
                "pred_boxes": torch.rand(batch, queries, 4, generator=g,
                                         dtype=torch.float64) * 0.4 + 0.2,
                "pred_masks": torch.randn(batch, queries, 12, 16, generator=g,
                                          dtype=torch.float64)} for _ in range(stages)]
    targets = [{"labels": torch.randint(0, classes, (n,), generator=g),
                "boxes": torch.rand(n, 4, generator=g, dtype=torch.float64) * 0.4 + 0.2,
                "masks": (torch.rand(n, 24, 32, generator=g) > 0.5).double()} for n in counts]
    return outputs, targets


@pytest.mark.parametrize("seed", range(4))
def test_batched_stages_match_as_each_image_alone_with_scipy(seed):
    """match_stages costs all stages and images in one batch (targets padded): every
    image's cost and assignment equal scipy's on that image's own cost matrix."""
    counts = (3, 0, 5, 1)
    outputs, targets = random_batch(seed, counts, queries=6)
    matcher = HungarianMatcher(num_points=40)
    seeds = [[100 * s + b for b in range(len(counts))] for s in range(len(outputs))]
    points = [torch.stack([torch.rand(40, 2, generator=torch.Generator().manual_seed(k))
                           for k in row]) for row in seeds]
    batched = matcher.match_stages(outputs, targets, points)
    padded_cost = matcher.batched_costs(outputs, padded_targets(targets, True), points)
    for s, stage in enumerate(outputs):
        for b, target in enumerate(targets):
            cost = matcher.cost_matrix(stage["pred_logits"][b], stage["pred_boxes"][b],
                                       stage["pred_masks"][b], target,
                                       torch.Generator().manual_seed(seeds[s][b]))
            torch.testing.assert_close(padded_cost[s * len(counts) + b, :, :counts[b]], cost,
                                       rtol=0, atol=1e-12)
            rows, cols = linear_sum_assignment(cost.numpy())
            assert batched[s][b][0].tolist() == rows.tolist()
            assert batched[s][b][1].tolist() == cols.tolist()


def test_stages_of_other_shapes_and_without_masks_match_apart():
    """A stage without mask costs and one with more queries are costed in their own
    batches; each still equals its single-stage match."""
    outputs, targets = random_batch(3, (2, 4))
    small, _ = random_batch(4, (2, 4), stages=1, queries=9)
    stages = [outputs[0], {k: v for k, v in outputs[1].items() if k != "pred_masks"},
              small[0]]
    matcher = HungarianMatcher(num_points=30)
    points = [matcher.draw_points(targets, True, torch.Generator().manual_seed(1)), None,
              matcher.draw_points(targets, True, torch.Generator().manual_seed(2))]
    together = matcher.match_stages(stages, targets, points)
    for stage, p, got in zip(stages, points, together, strict=True):
        alone = matcher.match_stages([stage], targets, [p])[0]
        assert [(q.tolist(), j.tolist()) for q, j in got] == \
            [(q.tolist(), j.tolist()) for q, j in alone]


def test_pairwise_giou_equals_torchvision_in_every_batch():
    g = torch.Generator().manual_seed(0)
    corners = torch.rand(3, 7, 2, 2, generator=g, dtype=torch.float64)
    one = torch.cat((corners.amin(2), corners.amax(2)), -1)           # (3, 7, 4) xyxy
    two = one[:, :4].flip(1) * 0.8 + 0.1
    want = torch.stack([generalized_box_iou(a, b) for a, b in zip(one, two, strict=True)])
    torch.testing.assert_close(pairwise_giou(one, two), want, rtol=0, atol=1e-12)
