"""Loss terms of MaskDINO / DI-MaskDINO, each normalised by the number of objects.

The criterion (matching every supervised stage and weighting these terms) builds on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou

from dimaskdino.modeling.box_ops import box_cxcywh_to_xyxy
from dimaskdino.modeling.matcher import point_sample


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, num_objects: float,
               alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss summed over queries and classes, divided by ``num_objects``.

    ``logits``, ``targets`` ``(B, Q, K)`` (one-hot targets; unmatched queries all zero).
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * loss).sum() / num_objects


def box_losses(pred: torch.Tensor, target: torch.Tensor, num_objects: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 and GIoU losses of matched boxes ``(N, 4)`` cxcywh, each summed / ``num_objects``."""
    l1 = (pred - target).abs().sum() / num_objects
    giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(target)))
    return l1, (1 - giou).sum() / num_objects


def draw_point_candidates(count: int, num_points: int, oversample: float = 3.0,
                          importance: float = 0.75, generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The random draws of PointRend's training points for ``count`` masks (see
    :func:`select_uncertain_points`): ``oversample * num_points`` candidates ``(count, S,
    2)`` and the ``(1 - importance) * num_points`` random points ``(count, R, 2)`` added to
    the kept ones."""
    candidates = torch.rand(count, int(num_points * oversample), 2, generator=generator)
    important = int(importance * num_points)
    return candidates, torch.rand(count, num_points - important, 2, generator=generator)


def select_uncertain_points(mask_logits: torch.Tensor, candidates: torch.Tensor,
                            random: torch.Tensor, num_points: int) -> torch.Tensor:
    """PointRend's training points: of the :func:`draw_point_candidates` of each of
    ``mask_logits (N, H, W)``, the ``num_points - R`` most uncertain (logit closest to 0),
    then its ``R`` random points: normalized ``(x, y)`` points ``(N, num_points, 2)``."""
    candidates, random = candidates.to(mask_logits), random.to(mask_logits)
    values = point_sample(mask_logits, candidates)
    important = num_points - random.shape[1]
    index = (-values.abs()).topk(important, dim=1).indices
    chosen = candidates.gather(1, index[..., None].expand(-1, -1, 2))
    return torch.cat((chosen, random), dim=1)


def mask_terms(pred: torch.Tensor, target: torch.Tensor, points: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask BCE (mean over points) and dice ``(N,)`` of ``pred (N, h, w)`` logits vs
    ``target (N, H, W)`` {0, 1} at ``points (N, P, 2)``."""
    logits = point_sample(pred, points)
    labels = point_sample(target.to(pred), points)
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * labels).sum(1) + 1) / (prob.sum(1) + labels.sum(1) + 1)
    return bce, dice
