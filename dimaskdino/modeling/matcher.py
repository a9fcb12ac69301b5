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

from dimaskdino.modeling.box_ops import box_cxcywh_to_xyxy


def point_sample(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``masks (N, H, W)`` at normalized ``(x, y)`` points, shared
    ``(P, 2)`` or per mask ``(N, P, 2)`` (pixel centres at ``(x * W - 0.5, y * H - 0.5)``,
    zero outside): ``(N, P)``."""
    grid = (2 * points - 1).expand(masks.shape[0], -1, 2)[:, None]
    return F.grid_sample(masks[:, None], grid.to(masks.dtype), align_corners=False)[:, 0, 0]


def point_sample_maps(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of every channel of ``maps (B, C, H, W)`` at ``points (B, R, P, 2)``
    (as :func:`point_sample`): ``(B, C, R, P)``. One call samples all masks of a batch."""
    return F.grid_sample(maps, (2 * points - 1).to(maps.dtype), align_corners=False)


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25,
                     gamma: float = 2.0) -> torch.Tensor:
    """``(..., Q, K)`` logits, ``(..., M)`` labels -> ``(..., Q, M)``: the focal loss of
    calling query i class ``label_j`` minus that of calling it not ``label_j``."""
    prob = logits.sigmoid()
    negative = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
    positive = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    index = labels[..., None, :].expand(*prob.shape[:-1], labels.shape[-1])
    return positive.gather(-1, index) - negative.gather(-1, index)


def pairwise_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """GIoU of every pair of xyxy boxes ``(..., Q, 4)``, ``(..., M, 4)`` -> ``(..., Q, M)``
    (torchvision's ``generalized_box_iou`` with batch dimensions)."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    one, two = boxes1[..., :, None, :], boxes2[..., None, :, :]
    inner = (torch.min(one[..., 2:], two[..., 2:]) - torch.max(one[..., :2], two[..., :2]))
    inner = inner.clamp(min=0)
    intersection = inner[..., 0] * inner[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - intersection
    outer = (torch.max(one[..., 2:], two[..., 2:]) - torch.min(one[..., :2], two[..., :2]))
    outer = outer.clamp(min=0)
    hull = outer[..., 0] * outer[..., 1]
    return intersection / union - (hull - union) / hull


def mask_bce_cost(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over points of every pair: ``(..., Q, P)``, ``(..., M, P)`` ->
    ``(..., Q, M)``."""
    positive = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    negative = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred),
                                                  reduction="none")
    return (positive @ target.mT + negative @ (1 - target).mT) / pred.shape[-1]


def mask_dice_cost(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - (2 |p t| + 1) / (|p| + |t| + 1)`` of every pair, sigmoid predictions."""
    prob = pred.sigmoid()
    numerator = 2 * prob @ target.mT
    denominator = prob.sum(-1)[..., :, None] + target.sum(-1)[..., None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def padded_targets(targets: list[dict[str, torch.Tensor]], masks: bool
                   ) -> dict[str, torch.Tensor]:
    """The batch's targets padded to its most objects ``M``: ``labels (B, M)``, ``boxes
    (B, M, 4)`` (padding: the whole image, so every cost stays finite) and, with ``masks``,
    ``masks (B, M, H, W)`` (padding: empty)."""
    most = max(len(t["labels"]) for t in targets)
    first = targets[0]
    out = {"labels": first["labels"].new_zeros(len(targets), most),
           "boxes": first["boxes"].new_tensor([0.5, 0.5, 1.0, 1.0]).repeat(len(targets),
                                                                           most, 1)}
    if masks:
        out["masks"] = first["masks"].new_zeros(len(targets), most, *first["masks"].shape[1:])
    for b, target in enumerate(targets):
        for key, value in out.items():
            value[b, :len(target["labels"])] = target[key]
    return out


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising the weighted matching cost (scipy's Hungarian).

    The costs of all images of a stage, and of all stages of equal shapes, are computed
    as one batch; scipy then solves each image's ``(Q, n)`` matrix."""

    def __init__(self, cost_class: float = 4.0, cost_box: float = 5.0, cost_giou: float = 2.0,
                 cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544
                 ) -> None:
        super().__init__()
        self.cost_class, self.cost_box, self.cost_giou = cost_class, cost_box, cost_giou
        self.cost_mask, self.cost_dice, self.num_points = cost_mask, cost_dice, num_points

    def draw_points(self, targets: list[dict[str, torch.Tensor]], use_masks: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor | None:
        """``(B, num_points, 2)`` random points of one stage's mask costs, each image's from
        its ``target["generator"]`` (else ``generator``); None without mask costs (``use_masks``
        off or targets without masks). Drawn apart from the costs so that a caller can draw
        every stage's points in order and cost the stages together."""
        if not use_masks or not all("masks" in t for t in targets):
            return None
        return torch.stack([torch.rand(self.num_points, 2, generator=t.get("generator",
                                                                             generator))
                            for t in targets])

    @torch.no_grad()
    def batched_costs(self, stages: list[dict[str, torch.Tensor]],
                      padded: dict[str, torch.Tensor], points: list[torch.Tensor] | None
                      ) -> torch.Tensor:
        """``(S * B, Q, M)`` costs of ``S`` stages of equal shapes (``pred_logits (B, Q, K)``,
        ``pred_boxes (B, Q, 4)`` cxcywh, ``pred_masks (B, Q, h, w)`` logits) against the
        :func:`padded_targets`; mask costs at each stage's ``points (B, P, 2)`` unless
        ``points`` is None. Columns past an image's objects are padding."""
        logits = torch.cat([s["pred_logits"] for s in stages])
        boxes = torch.cat([s["pred_boxes"] for s in stages])
        repeat = len(stages)
        labels = padded["labels"].repeat(repeat, 1).to(logits.device)
        target_boxes = padded["boxes"].repeat(repeat, 1, 1).to(boxes)
        cost = self.cost_class * focal_class_cost(logits, labels)
        cost = cost + self.cost_box * torch.cdist(boxes, target_boxes, p=1)
        cost = cost - self.cost_giou * pairwise_giou(box_cxcywh_to_xyxy(boxes),
                                                     box_cxcywh_to_xyxy(target_boxes))
        if points is not None:
            masks = stages[0]["pred_masks"]
            pred = torch.cat([point_sample_maps(s["pred_masks"], p.to(masks)[:, None])[:, :, 0]
                              for s, p in zip(stages, points, strict=True)])
            gt = point_sample_maps(padded["masks"].to(masks),
                                   torch.stack(points, 1).to(masks))  # (B, M, S, P)
            gt = gt.permute(2, 0, 1, 3).flatten(0, 1)
            cost = cost + self.cost_mask * mask_bce_cost(pred, gt)
            cost = cost + self.cost_dice * mask_dice_cost(pred, gt)
        return cost

    @torch.no_grad()
    def match_stages(self, stages: list[dict[str, torch.Tensor]],
                     targets: list[dict[str, torch.Tensor]],
                     points: list[torch.Tensor | None]
                     ) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Assignments of several stages (each with its :meth:`draw_points`, None: no mask
        costs): per stage, per image ``(query indices, target indices)`` sorted by query.
        Stages of equal shapes are costed in one batch and leave the device in one copy."""
        groups: dict[tuple, list[int]] = {}
        for s, (stage, p) in enumerate(zip(stages, points, strict=True)):
            masks = stage["pred_masks"].shape if p is not None else None
            key = (stage["pred_logits"].shape, stage["pred_boxes"].shape, masks)
            groups.setdefault(key, []).append(s)
        padded = padded_targets(targets, any(p is not None for p in points))
        counts = [len(t["labels"]) for t in targets]
        out: list = [None] * len(stages)
        for members in groups.values():
            mask_points = [points[s] for s in members]
            cost = self.batched_costs([stages[s] for s in members], padded,
                                      None if mask_points[0] is None else mask_points)
            cost = cost.double().cpu().numpy()
            for k, s in enumerate(members):
                out[s] = []
                for b, n in enumerate(counts):
                    rows, cols = linear_sum_assignment(cost[k * len(targets) + b, :, :n])
                    out[s].append((torch.as_tensor(rows, dtype=torch.int64),
                                   torch.as_tensor(cols, dtype=torch.int64)))
        return out

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor,
                    masks: torch.Tensor | None, target: dict[str, torch.Tensor],
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """``(Q, M)`` cost of one image: ``logits (Q, K)``, ``boxes (Q, 4)`` cxcywh,
        ``masks (Q, h, w)`` logits or None (no mask costs); ``target`` with ``labels (M,)``,
        ``boxes (M, 4)`` and, for masks, ``masks (M, H, W)``."""
        stage = {"pred_logits": logits[None], "pred_boxes": boxes[None],
                 "pred_masks": None if masks is None else masks[None]}
        points = self.draw_points([target], masks is not None, generator)
        return self.batched_costs([stage], padded_targets([target], points is not None),
                                  None if points is None else [points])[0]

    @torch.no_grad()
    def forward(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]],
                use_masks: bool = True, generator: torch.Generator | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image, ``(query indices, target indices)`` of the assignment (int64, sorted
        by query). ``outputs`` has ``pred_logits``, ``pred_boxes`` and ``pred_masks``; an
        image's ``target["generator"]``, when given, draws its points instead of
        ``generator``."""
        use_masks = use_masks and outputs.get("pred_masks") is not None
        points = self.draw_points(targets, use_masks, generator)
        return self.match_stages([outputs], targets, [points])[0]
