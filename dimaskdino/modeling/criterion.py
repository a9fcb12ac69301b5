"""The training criterion: match every supervised stage and sum its weighted losses.

Stages (MaskDINO / DI-MaskDINO): the last decoder layer; every other layer, layer 0 (the
decoder's input queries) included; the two-stage selection (``interm``); DI's token-
interaction outputs (class and box only); and the denoising queries, whose "matching" is
given by construction. Each stage is Hungarian-matched on its own.

The work is batched, not looped per image or stage: every random draw is made first, in
the order (stage by stage, image by image, from each image's generator) a per-stage loop
would make it, so the batched forms see the same points; the matching costs of stages of
equal shapes are one batch (:meth:`HungarianMatcher.match_stages`), and the point sampling
and mask losses of all stages are one batch whose per-mask terms are summed per stage.

*Loss-weight constraint* (paper Tab. 3): the detection weights (L1 and GIoU) are multiplied
by ``detection_scale`` (0.1 for the constraint) at every stage; the class and
segmentation weights are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from dimaskdino.config_ranges import at_least, check_ranges, ranged
from dimaskdino.modeling.losses import (
    box_losses,
    draw_point_candidates,
    focal_loss,
    mask_terms,
    select_uncertain_points,
)
from dimaskdino.modeling.matcher import HungarianMatcher


@dataclass
class LossWeights:
    """Official weights: class 4, L1 5, GIoU 2, mask BCE 5, dice 5."""

    classification: float = ranged(4.0, at_least(0))
    l1: float = ranged(5.0, at_least(0))
    giou: float = ranged(2.0, at_least(0))
    mask: float = ranged(5.0, at_least(0))
    dice: float = ranged(5.0, at_least(0))
    detection_scale: float = ranged(1.0, at_least(0))  # 0.1 = the paper's loss-weight constraint

    def __post_init__(self) -> None:
        check_ranges(self)

    def of(self, term: str) -> float:
        weight = getattr(self, {"class": "classification"}.get(term, term))
        return weight * self.detection_scale if term in ("l1", "giou") else weight


@dataclass
class Matched:
    """Matched pairs of one stage, image by image: query ``query`` of image ``batch`` is
    object ``target`` of the batch's concatenated targets (all ``(n,)`` int64)."""

    batch: torch.Tensor
    query: torch.Tensor
    target: torch.Tensor

    @classmethod
    def from_indices(cls, indices: list[tuple[torch.Tensor, torch.Tensor]],
                     offsets: list[int], device: torch.device) -> Matched:
        """From the matcher's per-image ``(queries, targets)``; one copy to ``device``."""
        rows = [q.numpy() for q, _ in indices]
        batch = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        target = [j.numpy() + offset for (_, j), offset in zip(indices, offsets, strict=True)]
        stacked = np.stack([batch, np.concatenate(rows), np.concatenate(target)])
        return cls(*torch.from_numpy(stacked.astype(np.int64)).to(device).unbind())


class PointDraws(NamedTuple):
    """The random draws of one stage's mask-loss points
    (:func:`~dimaskdino.modeling.losses.draw_point_candidates`), concatenated over images:
    ``candidates (N, S, 2)`` and ``random (N, R, 2)``."""

    candidates: torch.Tensor
    random: torch.Tensor


class LossJob(NamedTuple):
    """One supervised stage: ``name`` (the suffix of its loss terms), its predictions
    ``stage`` (``pred_logits``, ``pred_boxes`` and maybe ``pred_masks``), its ``matched``
    pairs, the normalizer ``norm`` of its terms, and ``points``, the draws of its mask loss
    (None where it has no masks)."""

    name: str
    stage: dict
    matched: Matched
    norm: float
    points: PointDraws | None = None


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

    def _draw_loss_points(self, targets: list[dict], counts: list[int]) -> PointDraws:
        """The mask-loss point draws of one stage whose image ``b`` has ``counts[b]``
        matched masks, each image's from its generator; concatenated over images."""
        draws = [draw_point_candidates(n, self.num_points, self.oversample, self.importance,
                                       t.get("generator")) for t, n in zip(targets, counts,
                                                                          strict=True)]
        return PointDraws(torch.cat([c for c, _ in draws]), torch.cat([r for _, r in draws]))

    def _class_box_losses(self, job: LossJob, batch_targets: dict[str, torch.Tensor]
                          ) -> dict[str, torch.Tensor]:
        """Unweighted class, L1 and GIoU terms of one stage."""
        logits, matched = job.stage["pred_logits"], job.matched
        classes = torch.zeros_like(logits)
        classes[matched.batch, matched.query, batch_targets["labels"][matched.target]] = 1
        out = {"class": focal_loss(logits, classes, job.norm)}
        out["l1"], out["giou"] = box_losses(
            job.stage["pred_boxes"][matched.batch, matched.query],
            batch_targets["boxes"][matched.target].to(logits), job.norm)
        return out

    def _mask_losses(self, jobs: list[LossJob], batch_targets: dict[str, torch.Tensor]
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Mask BCE and dice of every job, by name; the masks of all jobs (of one mask size)
        point-sampled and scored in one batch."""
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        by_size: dict[tuple, list[LossJob]] = {}
        for job in jobs:
            by_size.setdefault(tuple(job.stage["pred_masks"].shape[-2:]), []).append(job)
        for group in by_size.values():
            pred = torch.cat([job.stage["pred_masks"][job.matched.batch, job.matched.query]
                              for job in group])
            gt = batch_targets["masks"][torch.cat([job.matched.target for job in group])]
            with torch.no_grad():
                points = select_uncertain_points(
                    pred, torch.cat([job.points.candidates for job in group]),
                    torch.cat([job.points.random for job in group]), self.num_points)
            bce, dice = mask_terms(pred, gt, points)
            sizes = [len(job.matched.batch) for job in group]
            for job, b, d in zip(group, bce.split(sizes), dice.split(sizes), strict=True):
                out[job.name] = (b.sum() / job.norm, d.sum() / job.norm)
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
        counts = [len(t["labels"]) for t in targets]
        offsets = np.cumsum([0, *counts[:-1]]).tolist()
        # every random draw first, in the per-stage order: matching, then loss points
        match_points, loss_points = [], {}
        for name, stage in stages.items():
            masked = stage.get("pred_masks") is not None
            match_points.append(self.matcher.draw_points(targets, masked))
            if masked:
                queries = stage["pred_logits"].shape[1]
                loss_points[name] = self._draw_loss_points(targets,
                                                           [min(queries, n) for n in counts])
        device = outputs["layers"][-1]["pred_logits"].device
        jobs = [LossJob(name, stage, Matched.from_indices(indices, offsets, device),
                        num_objects, loss_points.get(name))
                for (name, stage), indices in zip(stages.items(), self.matcher.match_stages(
                    list(stages.values()), targets, match_points), strict=True)]
        if "denoising" in outputs:
            dn = outputs["denoising"]["queries"]
            matched = self._denoising_matches(dn, counts, offsets, device)
            for i, layer in enumerate(outputs["denoising"]["layers"]):
                points = None
                if layer.get("pred_masks") is not None:
                    points = self._draw_loss_points(targets, [dn.groups * n for n in counts])
                jobs.append(LossJob(f"dn{i}", layer, matched, num_objects * dn.groups, points))
        batch_targets = {key: torch.cat([t[key] for t in targets])
                         for key in ("labels", "boxes")}
        masked = [job for job in jobs if job.points is not None]
        if masked:
            batch_targets["masks"] = torch.cat([t["masks"] for t in targets])
        masks = self._mask_losses(masked, batch_targets)
        losses: dict[str, torch.Tensor] = {}
        for job in jobs:
            terms = self._class_box_losses(job, batch_targets)
            if job.name in masks:
                terms["mask"], terms["dice"] = masks[job.name]
            for term, value in terms.items():
                losses[f"{term}_{job.name}"] = value * self.weights.of(term)
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    @staticmethod
    def _denoising_matches(dn, counts: list[int], offsets: list[int],
                           device: torch.device) -> Matched:
        """Denoising query ``g * group_size + k`` of an image reconstructs its object ``k``,
        in every group ``g`` (image by image, group by group); computed once per batch."""
        slots = [torch.arange(n) for n in counts]
        return Matched(*torch.stack([
            torch.cat([torch.full((dn.groups * n,), b) for b, n in enumerate(counts)]),
            torch.cat([torch.cat([k + g * dn.group_size for g in range(dn.groups)])
                       for k in slots]),
            torch.cat([(k + offset).repeat(dn.groups) for k, offset in zip(slots, offsets,
                                                                            strict=True)]),
        ]).to(device).unbind())
