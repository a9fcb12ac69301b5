"""Hungarian matching of predictions to ground truth (MaskDINO's costs).

Cost of query i for object j = ``class * focal(i, label_j) + box * L1(box_i, box_j)
+ giou * -GIoU(box_i, box_j) + mask * BCE(mask_i, mask_j) + dice * dice(mask_i, mask_j)``,
masks compared at ``num_points`` random points shared by all pairs of an image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import generalized_box_iou

from dimaskdino.modeling.box_ops import box_cxcywh_to_xyxy


def point_sample(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``masks (N, H, W)`` at normalized ``(x, y)`` points, shared
    ``(P, 2)`` or per mask ``(N, P, 2)`` (pixel centres at ``(x * W - 0.5, y * H - 0.5)``,
    zero outside): ``(N, P)``."""
    grid = (2 * points - 1).expand(masks.shape[0], -1, 2)[:, None]
    return F.grid_sample(masks[:, None], grid.to(masks.dtype), align_corners=False)[:, 0, 0]


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25,
                     gamma: float = 2.0) -> torch.Tensor:
    """``(Q, K)`` logits, ``(M,)`` labels -> ``(Q, M)``: the focal loss of calling query i
    class ``label_j`` minus that of calling it not ``label_j``."""
    prob = logits.sigmoid()
    negative = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
    positive = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    return positive[:, labels] - negative[:, labels]


def mask_bce_cost(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over points of every pair: ``(Q, P)``, ``(M, P)`` -> ``(Q, M)``."""
    positive = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    negative = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred),
                                                  reduction="none")
    return (positive @ target.T + negative @ (1 - target).T) / pred.shape[1]


def mask_dice_cost(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - (2 |p t| + 1) / (|p| + |t| + 1)`` of every pair, sigmoid predictions."""
    prob = pred.sigmoid()
    numerator = 2 * prob @ target.T
    denominator = prob.sum(-1)[:, None] + target.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising the weighted matching cost (scipy's Hungarian)."""

    def __init__(self, cost_class: float = 4.0, cost_box: float = 5.0, cost_giou: float = 2.0,
                 cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544
                 ) -> None:
        super().__init__()
        self.cost_class, self.cost_box, self.cost_giou = cost_class, cost_box, cost_giou
        self.cost_mask, self.cost_dice, self.num_points = cost_mask, cost_dice, num_points

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor,
                    masks: torch.Tensor | None, target: dict[str, torch.Tensor],
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """``(Q, M)`` cost of one image: ``logits (Q, K)``, ``boxes (Q, 4)`` cxcywh,
        ``masks (Q, h, w)`` logits or None (no mask costs); ``target`` with ``labels (M,)``,
        ``boxes (M, 4)`` and, for masks, ``masks (M, H, W)``."""
        cost = self.cost_class * focal_class_cost(logits, target["labels"])
        cost = cost + self.cost_box * torch.cdist(boxes, target["boxes"].to(boxes), p=1)
        cost = cost - self.cost_giou * generalized_box_iou(
            box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target["boxes"].to(boxes)))
        if masks is not None:
            points = torch.rand(self.num_points, 2, generator=generator).to(masks)
            pred = point_sample(masks, points)
            gt = point_sample(target["masks"].to(masks), points)
            cost = cost + self.cost_mask * mask_bce_cost(pred, gt)
            cost = cost + self.cost_dice * mask_dice_cost(pred, gt)
        return cost

    @torch.no_grad()
    def forward(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]],
                use_masks: bool = True, generator: torch.Generator | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image, ``(query indices, target indices)`` of the assignment (int64, sorted
        by query). ``outputs`` has ``pred_logits``, ``pred_boxes`` and ``pred_masks``; an
        image's ``target["generator"]``, when given, draws its points instead of
        ``generator``."""
        indices = []
        for b, target in enumerate(targets):
            masks = outputs["pred_masks"][b] if use_masks and "masks" in target else None
            cost = self.cost_matrix(outputs["pred_logits"][b], outputs["pred_boxes"][b], masks,
                                    target, target.get("generator", generator))
            rows, cols = linear_sum_assignment(cost.double().cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64),
                            torch.as_tensor(cols, dtype=torch.int64)))
        return indices
