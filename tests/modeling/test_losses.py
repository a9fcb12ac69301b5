"""Loss terms against torchvision's and direct computations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from dimaskdino.modeling.box_ops import box_cxcywh_to_xyxy
from dimaskdino.modeling.losses import (
    box_losses,
    draw_point_candidates,
    focal_loss,
    mask_terms,
    select_uncertain_points,
)
from dimaskdino.modeling.matcher import point_sample

G = torch.Generator().manual_seed(0)


def test_focal_loss_equals_torchvision():
    logits = torch.randn(2, 7, 5, generator=G, dtype=torch.float64)
    targets = torch.zeros_like(logits)
    targets[0, 1, 3] = targets[1, 4, 0] = 1
    want = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="sum") / 2
    torch.testing.assert_close(focal_loss(logits, targets, 2), want, rtol=0, atol=1e-12)


def test_box_losses_equal_torchvision_giou_and_direct_l1():
    pred = torch.rand(4, 4, generator=G, dtype=torch.float64) * 0.4 + 0.2
    target = torch.rand(4, 4, generator=G, dtype=torch.float64) * 0.4 + 0.2
    l1, giou = box_losses(pred, target, 3)
    torch.testing.assert_close(l1, F.l1_loss(pred, target, reduction="sum") / 3)
    want = generalized_box_iou_loss(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(target),
                                    reduction="sum", eps=0.0) / 3
    torch.testing.assert_close(giou, want, rtol=0, atol=1e-12)


def test_mask_terms_equal_direct_computation():
    pred = torch.randn(3, 8, 10, generator=G, dtype=torch.float64)
    target = (torch.rand(3, 16, 20, generator=G) > 0.5).double()
    points = torch.rand(3, 30, 2, generator=G, dtype=torch.float64)
    bce, dice = mask_terms(pred, target, points)
    for m, t, p, got_bce, got_dice in zip(pred, target, points, bce, dice, strict=True):
        x, y = point_sample(m[None], p)[0], point_sample(t[None], p)[0]
        torch.testing.assert_close(got_bce, F.binary_cross_entropy_with_logits(x, y))
        s = x.sigmoid()
        torch.testing.assert_close(got_dice, 1 - (2 * (s * y).sum() + 1) / (s.sum() + y.sum()
                                                                           + 1))


def test_uncertain_points_prefer_the_boundary():
    # logits that are zero along x = 0.5 and large elsewhere
    xs = torch.linspace(-1, 1, 64, dtype=torch.float64)
    masks = (xs * 20).expand(2, 48, 64).clone()
    points = select_uncertain_points(masks, *draw_point_candidates(2, 100, generator=G), 100)
    assert points.shape == (2, 100, 2)
    important = points[:, :75, 0]
    assert (important - 0.5).abs().mean() < 0.1          # chosen near the boundary
    assert (points[:, 75:, 0] - 0.5).abs().mean() > 0.15  # the rest are uniform
