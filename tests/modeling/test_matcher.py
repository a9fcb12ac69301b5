"""Hungarian matcher: cost terms against direct per-pair formulas, assignment vs brute force."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from dimaskdino.modeling.box_ops import box_cxcywh_to_xyxy
from dimaskdino.modeling.matcher import HungarianMatcher, point_sample


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
