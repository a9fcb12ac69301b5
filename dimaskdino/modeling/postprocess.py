"""Instance inference: the top (query, class) pairs of one image, at its output size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from dimaskdino.modeling.box_ops import box_cxcywh_to_xyxy

if TYPE_CHECKING:
    from dimaskdino.modeling.model import Prediction


def resize_masks(mask_logits: torch.Tensor, padded_size: tuple[int, int],
                 image_size: tuple[int, int], output_size: tuple[int, int]) -> torch.Tensor:
    """Mask logits at stride 4 of the padded batch -> logits at the output size.

    Upsample bilinearly to the padded size, crop the image's area, resize bilinearly to the
    output size (detectron2's ``sem_seg_postprocess``): ``(N, h, w)`` -> ``(N, H_out, W_out)``.
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0, *output_size))
    masks = F.interpolate(mask_logits[None], size=padded_size, mode="bilinear",
                          align_corners=False)
    masks = masks[..., : image_size[0], : image_size[1]]
    if tuple(image_size) != tuple(output_size):  # a same-size bilinear resize is the identity
        masks = F.interpolate(masks, size=output_size, mode="bilinear", align_corners=False)
    return masks[0]


def boxes_to_output(boxes: torch.Tensor, padded_size: tuple[int, int],
                    image_size: tuple[int, int], output_size: tuple[int, int]) -> torch.Tensor:
    """Normalized cxcywh of the padded batch ``(n, 4)`` -> xyxy pixels at the output size."""
    scale = torch.tensor([padded_size[1] / image_size[1] * output_size[1],
                          padded_size[0] / image_size[0] * output_size[0]],
                         dtype=boxes.dtype, device=boxes.device).repeat(2)
    return box_cxcywh_to_xyxy(boxes) * scale


def box_inference(logits: torch.Tensor, boxes: torch.Tensor, padded_size: tuple[int, int],
                  image_size: tuple[int, int], output_size: tuple[int, int],
                  topk: int = 100) -> dict:
    """Detections of a stage that predicts no masks (DI's token interaction): the top
    (query, class) pairs scored by class probability; keys as :func:`instance_inference`
    without ``pred_masks``."""
    scores, query_index, labels = _top_pairs(logits, topk)
    return {"scores": scores, "pred_classes": labels,
            "pred_boxes": boxes_to_output(boxes[query_index], padded_size, image_size,
                                          output_size),
            "query_index": query_index, "class_scores": scores}


def _top_pairs(logits: torch.Tensor, topk: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``topk`` best (query, class) pairs of ``logits (..., Q, K)`` by class probability:
    their probabilities, query indices and class indices, each ``(..., n)``."""
    queries, classes = logits.shape[-2:]
    scores, flat = logits.sigmoid().flatten(-2).topk(min(topk, queries * classes), dim=-1)
    return scores, flat // classes, flat % classes


def instance_inference(logits: torch.Tensor, mask_logits: torch.Tensor, boxes: torch.Tensor,
                       padded_size: tuple[int, int], image_size: tuple[int, int],
                       output_size: tuple[int, int], topk: int = 100) -> dict:
    """The official instance inference for one image.

    Args:
        logits: ``(Q, K)`` class logits (sigmoid scoring, no background class).
        mask_logits: ``(Q, h, w)`` at stride 4 of the padded batch.
        boxes: ``(Q, 4)`` normalized cxcywh relative to the padded batch.
        padded_size, image_size, output_size: ``(H, W)`` of the padded batch, of the image
            inside it, and of the requested output.
        topk: pairs kept (``TEST.DETECTIONS_PER_IMAGE``).

    Returns:
        dict with ``scores (n,)`` = class probability x mean mask probability inside the
        mask, ``pred_classes (n,)``, ``pred_boxes (n, 4)`` xyxy in output pixels,
        ``pred_masks (n, H_out, W_out)`` bool, ``query_index (n,)``, ``class_scores (n,)``;
        ordered by descending class probability.
    """
    return stacked_instance_inference(logits[None], mask_logits[None], boxes[None],
                                      padded_size, image_size, output_size, topk)[0]


def stacked_instance_inference(logits: torch.Tensor, mask_logits: torch.Tensor,
                               boxes: torch.Tensor, padded_size: tuple[int, int],
                               image_size: tuple[int, int], output_size: tuple[int, int],
                               topk: int = 100) -> list[dict]:
    """:func:`instance_inference` of S predictions of one image at once (e.g. its decoder
    layers): ``logits (S, Q, K)``, ``mask_logits (S, Q, h, w)``, ``boxes (S, Q, 4)`` -> S
    dicts.

    A query kept with several classes has one mask: each kept query's mask is resized,
    thresholded and scored once (in chunks of bounded memory) and shared by its pairs.
    """
    stages, queries, _ = logits.shape
    class_scores, query_index, labels = _top_pairs(logits, topk)    # (S, n) each
    stage = torch.arange(stages, device=logits.device)[:, None]
    kept, pair_mask = torch.unique(stage * queries + query_index, return_inverse=True)
    binary, mask_scores = _binary_masks_and_scores(mask_logits.flatten(0, 1)[kept],
                                                   padded_size, image_size, output_size)
    pred_boxes = boxes_to_output(boxes[stage, query_index], padded_size, image_size,
                                 output_size)
    return [{
        "scores": class_scores[s] * mask_scores[pair_mask[s]],
        "pred_classes": labels[s],
        "pred_boxes": pred_boxes[s],
        "pred_masks": binary[pair_mask[s]],
        "query_index": query_index[s],
        "class_scores": class_scores[s],
    } for s in range(stages)]


def layer_instances(pred: Prediction, image: int, layers: Sequence[int],
                    topk: int = 100) -> dict[int, dict]:
    """:func:`instance_inference` of ``layers`` of image ``image`` of ``pred`` (predicted
    with ``all_layers``): the inner layers post-processed together
    (:func:`stacked_instance_inference`), the last one as the model reported it (what
    ``dimask eval`` scores)."""
    last = len(pred.layers) - 1
    inner = [layer for layer in layers if layer != last]
    found = {}
    if inner:
        stacked = (torch.stack([pred.layers[layer][key][image] for layer in inner])
                   for key in ("pred_logits", "pred_masks", "pred_boxes"))
        found = dict(zip(inner, stacked_instance_inference(
            *stacked, pred.padded_size, pred.image_sizes[image], pred.output_sizes[image],
            topk), strict=True))
    if last in layers:
        found[last] = pred.instances[image]
    return found


def _binary_masks_and_scores(mask_logits: torch.Tensor, padded_size: tuple[int, int],
                             image_size: tuple[int, int], output_size: tuple[int, int],
                             chunk_elements: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, h, w)`` stride-4 logits -> masks ``(N, H_out, W_out)`` bool (logit > 0) and
    mask scores ``(N,)`` = mean probability inside the mask, resized ``chunk_elements``
    output pixels at a time so that the float intermediates stay small."""
    count = mask_logits.shape[0]
    binary = torch.empty((count, *output_size), dtype=torch.bool, device=mask_logits.device)
    scores = mask_logits.new_empty(count)
    step = max(1, chunk_elements // max(1, output_size[0] * output_size[1]))
    for start in range(0, count, step):
        masks = resize_masks(mask_logits[start:start + step], padded_size, image_size,
                             output_size)
        inside = torch.gt(masks, 0, out=binary[start:start + step])  # no bool temporary
        inside = inside.to(masks.dtype)  # float 0 / 1: several times faster than bool math
        area = inside.flatten(1).sum(1)  # exact: sums of ones
        scores[start:start + step] = (masks.sigmoid_().mul_(inside).flatten(1).sum(1)
                                      / (area + 1e-6))
    return binary, scores
