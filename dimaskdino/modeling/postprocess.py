"""Instance inference: the top (query, class) pairs of one image, at its output size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from dimaskdino.modeling.box_ops import box_cxcywh_to_xyxy
from dimaskdino.ops.masks import binary_masks_and_scores, encode_mask_logits

MaskFormat = Literal["bitmap", "rle"]


def output_scale(padded_size: tuple[int, int], image_size: tuple[int, int],
                 output_size: tuple[int, int]) -> list[float]:
    """``[sx, sy, sx, sy]``: normalized coordinates of the padded batch -> pixels at the
    output size."""
    sx = padded_size[1] / image_size[1] * output_size[1]
    sy = padded_size[0] / image_size[0] * output_size[0]
    return [sx, sy, sx, sy]


def boxes_to_output(boxes: torch.Tensor, padded_size: tuple[int, int],
                    image_size: tuple[int, int], output_size: tuple[int, int]) -> torch.Tensor:
    """Normalized cxcywh of the padded batch ``(..., 4)`` -> xyxy pixels at the output size."""
    return box_cxcywh_to_xyxy(boxes) * boxes.new_tensor(output_scale(padded_size, image_size,
                                                                     output_size))


def box_inference(logits: torch.Tensor, boxes: torch.Tensor, padded_size: tuple[int, int],
                  image_sizes: Sequence[tuple[int, int]],
                  output_sizes: Sequence[tuple[int, int]], topk: int = 100) -> list[dict]:
    """Detections of a stage that predicts no masks (DI's token interaction), for the B
    images of a batch (``logits (B, Q, K)``, ``boxes (B, Q, 4)``, one image and output size
    each): the top (query, class) pairs scored by class probability; keys as
    :func:`stacked_instance_inference` without masks."""
    scores, query_index, labels = _top_pairs(logits, topk)           # (B, n) each
    kept = boxes.gather(1, query_index[..., None].expand(-1, -1, 4))  # (B, n, 4)
    scale = boxes.new_tensor([output_scale(padded_size, image, output)
                              for image, output in zip(image_sizes, output_sizes, strict=True)])
    pred_boxes = box_cxcywh_to_xyxy(kept) * scale[:, None]
    return [{"scores": scores[b], "pred_classes": labels[b], "pred_boxes": pred_boxes[b],
             "query_index": query_index[b], "class_scores": scores[b]}
            for b in range(len(image_sizes))]


def _top_pairs(logits: torch.Tensor, topk: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``topk`` best (query, class) pairs of ``logits (..., Q, K)`` by class probability:
    their probabilities, query indices and class indices, each ``(..., n)``."""
    queries, classes = logits.shape[-2:]
    scores, flat = logits.sigmoid().flatten(-2).topk(min(topk, queries * classes), dim=-1)
    return scores, flat // classes, flat % classes


def stacked_instance_inference(logits: torch.Tensor, mask_logits: torch.Tensor,
                               boxes: torch.Tensor, padded_size: tuple[int, int],
                               image_size: tuple[int, int], output_size: tuple[int, int],
                               topk: int = 100, masks: MaskFormat = "bitmap") -> list[dict]:
    """The official instance inference of S predictions of one image at once (e.g. its
    decoder layers).

    Args:
        logits: ``(S, Q, K)`` class logits (sigmoid scoring, no background class).
        mask_logits: ``(S, Q, h, w)`` at stride 4 of the padded batch.
        boxes: ``(S, Q, 4)`` normalized cxcywh relative to the padded batch.
        padded_size, image_size, output_size: ``(H, W)`` of the padded batch, of the image
            inside it, and of the requested output.
        topk: pairs kept (``TEST.DETECTIONS_PER_IMAGE``).
        masks: how the masks are returned: ``"bitmap"``, ``pred_masks``; ``"rle"``,
            ``mask_rles`` and ``mask_boxes`` (what evaluation reads, made without
            full-size masks by :func:`~dimaskdino.ops.masks.encode_mask_logits`).

    Returns:
        S dicts, each with ``scores (n,)`` = class probability x mean mask probability
        inside the mask, ``pred_classes (n,)``, ``pred_boxes (n, 4)`` xyxy in output pixels,
        ``query_index (n,)``, ``class_scores (n,)``, ordered by descending class
        probability, and either ``pred_masks (n, H_out, W_out)`` bool or ``mask_rles``
        (n COCO RLE dicts; the pairs of one query share one dict: read it, do not edit
        it) with ``mask_boxes (n, 4)`` float64, each mask's tight ``[x, y, w, h]``.

    A query kept with several classes has one mask: each kept query's mask is resized,
    thresholded and scored (or encoded) once and shared by its pairs.
    """
    stages, queries, _ = logits.shape
    class_scores, query_index, labels = _top_pairs(logits, topk)    # (S, n) each
    stage = torch.arange(stages, device=logits.device)[:, None]
    kept, pair_mask = torch.unique(stage * queries + query_index, return_inverse=True)
    kept_logits = mask_logits.flatten(0, 1)[kept]
    if masks == "rle":
        encoded = encode_mask_logits(kept_logits, padded_size, image_size, output_size)
        mask_scores = encoded.scores
    else:
        binary, mask_scores = binary_masks_and_scores(kept_logits, padded_size, image_size,
                                                      output_size)
    pred_boxes = boxes_to_output(boxes[stage, query_index], padded_size, image_size,
                                 output_size)
    per_stage = []
    for s in range(stages):
        instances = {"scores": class_scores[s] * mask_scores[pair_mask[s]],
                     "pred_classes": labels[s], "pred_boxes": pred_boxes[s],
                     "query_index": query_index[s], "class_scores": class_scores[s]}
        if masks == "rle":
            pairs = pair_mask[s].tolist()
            instances["mask_rles"] = [encoded.rles[k] for k in pairs]
            instances["mask_boxes"] = encoded.boxes[pair_mask[s].cpu()]
        else:
            instances["pred_masks"] = binary[pair_mask[s]]
        per_stage.append(instances)
    return per_stage


def grouped_instance_inference(logits: torch.Tensor, mask_logits: torch.Tensor,
                               boxes: torch.Tensor, padded_size: tuple[int, int],
                               image_sizes: Sequence[tuple[int, int]],
                               output_sizes: Sequence[tuple[int, int]], topk: int = 100,
                               masks: MaskFormat = "bitmap") -> list[dict]:
    """The instances of N predictions in one padded batch (``logits (N, Q, K)``,
    ``mask_logits (N, Q, h, w)``, ``boxes (N, Q, 4)``, an image and output size each), as
    :func:`stacked_instance_inference` makes them: those of one image and output size are
    post-processed together (one call, one mask encoding for all)."""
    groups: dict[tuple, list[int]] = {}
    for n, sizes in enumerate(zip(image_sizes, output_sizes, strict=True)):
        groups.setdefault((tuple(sizes[0]), tuple(sizes[1])), []).append(n)
    found: list[dict] = [{}] * len(image_sizes)
    for (image, output), members in groups.items():
        index = torch.tensor(members, device=logits.device)
        stacked = stacked_instance_inference(logits[index], mask_logits[index], boxes[index],
                                             padded_size, image, output, topk, masks)
        for n, instances in zip(members, stacked, strict=True):
            found[n] = instances
    return found
