"""Instance inference: the top (query, class) pairs of one image, at its output size."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dimaskdino.modeling.box_ops import box_cxcywh_to_xyxy


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
    queries, classes = logits.shape
    scores, flat = logits.sigmoid().flatten().topk(min(topk, queries * classes))
    query_index = flat // classes
    return {"scores": scores, "pred_classes": flat % classes,
            "pred_boxes": boxes_to_output(boxes[query_index], padded_size, image_size,
                                          output_size),
            "query_index": query_index, "class_scores": scores}


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
    queries, classes = logits.shape
    class_scores, flat = logits.sigmoid().flatten().topk(min(topk, queries * classes))
    query_index, labels = flat // classes, flat % classes
    # only the kept queries' masks are resized (once each)
    masks = resize_masks(mask_logits[query_index], padded_size, image_size, output_size)
    binary = masks > 0
    area = binary.flatten(1).sum(1, dtype=masks.dtype)
    inside = masks.sigmoid().masked_fill_(~binary, 0.0)
    mask_scores = inside.flatten(1).sum(1) / (area + 1e-6)
    return {
        "scores": class_scores * mask_scores,
        "pred_classes": labels,
        "pred_boxes": boxes_to_output(boxes[query_index], padded_size, image_size,
                                      output_size),
        "pred_masks": binary,
        "query_index": query_index,
        "class_scores": class_scores,
    }
