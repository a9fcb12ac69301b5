"""Mask post-processing: stride-4 mask logits -> masks at an image's output size.

Instance inference resizes each kept query's logits to the output size (detectron2's
``sem_seg_postprocess``: bilinear to the padded batch, crop, bilinear to the output),
thresholds them at 0 and scores each mask by its mean probability inside. Two outputs:

* :func:`binary_masks_and_scores`: bool masks ``(N, H, W)`` (PyTorch), for drawing;
* :func:`encode_mask_logits`: each mask's COCO RLE, score and tight box, for evaluation.
  The C++ kernel (``csrc/mask_rle_cpu.cpp``) does it in one pass that never holds a
  full-size mask and skips the pixels that cannot be positive (those away from positive
  stride-4 logits); the reference, used where the kernel cannot be built, is
  :func:`binary_masks_and_scores` then :func:`encode_bitmaps`. There is no CUDA kernel:
  RLEs are built on the CPU either way, and the kernel reads the stride-4 logits (1/16
  of the full-size masks) where the GPU path would copy full-size bool masks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dimaskdino.ops.build import ExtensionBuildError, load_mask_extension
from dimaskdino.ops.dispatch import KernelUnavailableWarning

Size = tuple[int, int]


def resize_masks(mask_logits: torch.Tensor, padded_size: Size, image_size: Size,
                 output_size: Size) -> torch.Tensor:
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


def binary_masks_and_scores(mask_logits: torch.Tensor, padded_size: Size, image_size: Size,
                            output_size: Size, chunk_elements: int = 1 << 22
                            ) -> tuple[torch.Tensor, torch.Tensor]:
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


def encode_bitmaps(masks: np.ndarray) -> list[dict]:
    """COCO RLEs (``counts`` as str) of a bool array ``(N, H, W)``: hotcoco's encoder, which
    writes pycocotools' RLE byte for byte and reads the ``(H, W, N)`` view without a
    column-major copy (several times faster than ``pycocotools.mask.encode``)."""
    import hotcoco.mask

    if masks.shape[0] == 0:
        return []
    rles = hotcoco.mask.encode(masks.transpose(1, 2, 0))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


@dataclass
class EncodedMasks:
    """``scores (N,)`` (as :func:`binary_masks_and_scores`), ``boxes (N, 4)`` float64: the
    tight ``[x, y, w, h]`` of each mask as pycocotools' ``toBbox`` gives it (zeros for an
    empty mask), ``rles``: each mask's COCO RLE dict (``size``, ``counts`` as str)."""

    scores: torch.Tensor
    boxes: torch.Tensor
    rles: list[dict]


_warned: set[str] = set()  # the kernel's build error, once


def encode_mask_logits(mask_logits: torch.Tensor, padded_size: Size, image_size: Size,
                       output_size: Size, backend: str | None = None) -> EncodedMasks:
    """:class:`EncodedMasks` of ``(N, h, w)`` stride-4 logits (any device and float dtype;
    the kernel reads them as float32 on the CPU; the scores come back in the logits' device
    and dtype). ``backend``: ``"cpu"`` (the C++ kernel),
    ``"reference"``, or None: the kernel, else the reference with one
    :class:`~dimaskdino.ops.dispatch.KernelUnavailableWarning`."""
    if backend not in (None, "cpu", "reference"):
        raise ValueError(f"unknown backend {backend!r}; choose cpu or reference")
    size = [int(s) for s in output_size]
    if backend != "reference":
        try:
            kernel = load_mask_extension()
        except ExtensionBuildError as exc:
            if backend == "cpu":
                raise
            if not _warned:
                _warned.add(str(exc))
                warnings.warn(f"dimask: encoding masks without the C++ kernel (slower): {exc}",
                              KernelUnavailableWarning, stacklevel=2)
        else:
            logits = mask_logits.detach().to("cpu", torch.float32).contiguous()
            scores, boxes, counts = kernel.encode_masks(logits, list(padded_size),
                                                        list(image_size), size)
            return EncodedMasks(scores.to(mask_logits.device, mask_logits.dtype), boxes,
                                [{"size": size, "counts": c} for c in counts])
    binary, scores = binary_masks_and_scores(mask_logits, padded_size, image_size, output_size)
    rles = encode_bitmaps(binary.cpu().numpy())
    boxes = _tight_boxes(rles)
    return EncodedMasks(scores, boxes, rles)


def _tight_boxes(rles: list[dict]) -> torch.Tensor:
    import hotcoco.mask

    if not rles:
        return torch.zeros((0, 4), dtype=torch.float64)
    return torch.from_numpy(np.asarray(hotcoco.mask.to_bbox(rles), dtype=np.float64)
                            .reshape(-1, 4))
