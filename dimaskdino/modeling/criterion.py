"""The training criterion: match every supervised stage and sum its weighted losses.

Stages (MaskDINO / DI-MaskDINO): the last decoder layer; every other layer, layer 0 (the
decoder's input queries) included; the two-stage selection (``interm``); DI's token-
interaction outputs (class and box only); and the denoising queries, whose "matching" is
given by construction. Each stage is Hungarian-matched on its own.

*Loss-weight constraint* (paper Tab. 3): the detection weights (L1 and GIoU) are multiplied
by ``detection_scale`` (0.1 for the constraint) at every stage; the class and
segmentation weights are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dimaskdino.modeling.losses import box_losses, focal_loss, mask_losses, uncertain_points
from dimaskdino.modeling.matcher import HungarianMatcher


@dataclass
class LossWeights:
    """Official weights: class 4, L1 5, GIoU 2, mask BCE 5, dice 5."""

    classification: float = 4.0
    l1: float = 5.0
    giou: float = 2.0
    mask: float = 5.0
    dice: float = 5.0
    detection_scale: float = 1.0  # 0.1 = the paper's loss-weight constraint

    def of(self, term: str) -> float:
        weight = getattr(self, {"class": "classification"}.get(term, term))
        return weight * self.detection_scale if term in ("l1", "giou") else weight


class SetCriterion(nn.Module):
    """``forward(outputs, targets)`` -> dict of every weighted loss term and ``loss``.

    ``outputs`` is :class:`~dimaskdino.modeling.predictor.PredictorOutput`;
    ``targets`` per image ``labels (n,)``, ``boxes (n, 4)`` normalized cxcywh (of the padded
    batch), ``masks (n, H, W)`` {0, 1} and optionally ``generator``, the image's source of
    random points (matching and loss).
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher | None = None,
                 weights: LossWeights | None = None, num_points: int = 12544,
                 oversample: float = 3.0, importance: float = 0.75) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.weights = weights or LossWeights()
        self.matcher = matcher or HungarianMatcher(num_points=num_points)
        self.num_points, self.oversample, self.importance = num_points, oversample, importance

    def stage_losses(self, stage: dict, targets: list[dict], indices: list, num_objects: float
                     ) -> dict[str, torch.Tensor]:
        """Unweighted terms of one stage given its matching ``indices``."""
        logits = stage["pred_logits"]
        batch = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)])
        query = torch.cat([q for q, _ in indices])
        classes = torch.zeros_like(logits)
        labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices, strict=True)])
        classes[batch, query, labels.to(logits.device)] = 1
        out = {"class": focal_loss(logits, classes, num_objects)}
        target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in
                                  zip(targets, indices, strict=True)]).to(logits)
        out["l1"], out["giou"] = box_losses(stage["pred_boxes"][batch, query], target_boxes,
                                            num_objects)
        if stage.get("pred_masks") is not None:
            pred = stage["pred_masks"][batch, query]
            gt = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices, strict=True)])
            with torch.no_grad():  # each image's points from its own generator, if any
                points = torch.cat([
                    uncertain_points(part, self.num_points, self.oversample, self.importance,
                                     t.get("generator"))
                    for t, part in zip(targets, pred.split([len(q) for q, _ in indices]),
                                       strict=True)])
            out["mask"], out["dice"] = mask_losses(pred, gt, num_objects, points)
        return out

    def forward(self, outputs: dict, targets: list[dict], num_objects: float | None = None
                ) -> dict[str, torch.Tensor]:
        """``num_objects`` normalizes every term (default: the objects in ``targets``; under
        DDP the trainer passes the mean over processes, as the official code does)."""
        if num_objects is None:
            num_objects = float(sum(len(t["labels"]) for t in targets))
        num_objects = max(num_objects, 1.0)
        stages = {"final": outputs["layers"][-1], "interm": outputs["interm"]}
        stages.update({f"layer{i}": layer for i, layer in enumerate(outputs["layers"][:-1])})
        if "di" in outputs:
            stages.update({f"di{i}": aux for i, aux in enumerate(outputs["di"]["aux"])})
        for n, extra in enumerate(outputs.get("di_extra", []), start=3):  # selection n
            stages.update({f"di_s{n}_{i}": aux for i, aux in enumerate(extra["aux"])})
        losses: dict[str, torch.Tensor] = {}
        for name, stage in stages.items():
            use_masks = stage.get("pred_masks") is not None
            indices = self.matcher(stage, targets, use_masks=use_masks)
            for term, value in self.stage_losses(stage, targets, indices, num_objects).items():
                losses[f"{term}_{name}"] = value * self.weights.of(term)
        if "denoising" in outputs:
            dn = outputs["denoising"]["queries"]
            for i, layer in enumerate(outputs["denoising"]["layers"]):
                indices = self._denoising_indices(dn, targets)
                for term, value in self.stage_losses(layer, self._repeat(targets, dn.groups),
                                                     indices, num_objects * dn.groups).items():
                    losses[f"{term}_dn{i}"] = value * self.weights.of(term)
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    @staticmethod
    def _repeat(targets: list[dict], groups: int) -> list[dict]:
        """Targets with every object listed once per denoising group (per-object tensors
        repeated; anything else, e.g. the image's generator, passed on)."""
        return [{k: v.repeat(groups, *([1] * (v.dim() - 1))) if isinstance(v, torch.Tensor)
                 else v for k, v in t.items()} for t in targets]

    @staticmethod
    def _denoising_indices(dn, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Denoising query ``g * group_size + k`` reconstructs object ``k``, in every group."""
        indices = []
        for t in targets:
            n = len(t["labels"])
            slots = torch.arange(n)
            queries = torch.cat([slots + g * dn.group_size for g in range(dn.groups)])
            objects = torch.cat([slots + g * n for g in range(dn.groups)])
            indices.append((queries, objects))
        return indices
