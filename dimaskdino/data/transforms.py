"""Geometric transforms of an image with its instance masks.

Training uses MaskDINO's large-scale jitter (LSJ): a horizontal flip, a resize by a random
scale of the target size, and a fixed-size crop padded to the target size. Evaluation
resizes the shorter side (detectron2's ``ResizeShortestEdge``). Images are uint8
``(3, H, W)`` tensors; masks ``(n, H, W)`` bool. Every random draw comes from the
``torch.Generator`` passed in, so an augmented sample is a function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAD_VALUE = 128  # detectron2's FixedSizeCrop fills the image padding with grey


def resize(image: torch.Tensor, masks: torch.Tensor, size: tuple[int, int]
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear image, nearest-neighbour masks, to ``size = (H, W)``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, masks
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear",
                            align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    if masks.shape[0]:
        masks = F.interpolate(masks[None].to(torch.uint8), size=size, mode="nearest")[0]
        masks = masks.bool()
    else:
        masks = masks.new_zeros((0, *size))
    return resized, masks


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ``ResizeShortestEdge`` output size: shorter side ``short``, longer side
    at most ``max_size``, rounded half up."""
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@dataclass(frozen=True)
class LargeScaleJitter:
    """Flip, resize by ``uniform(min_scale, max_scale)`` of ``size``, crop to ``size``.

    As detectron2's ``RandomFlip`` + ``ResizeScale`` + ``FixedSizeCrop``: the image is scaled
    by ``min(s * size_h / H, s * size_w / W)``, a random ``size`` window is cut where the
    image is larger, and the result is padded (bottom/right) to ``size``.
    """

    size: tuple[int, int] = (1024, 1024)
    min_scale: float = 0.1
    max_scale: float = 2.0
    flip: bool = True

    def __call__(self, image: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the ``(3, *size)`` image and ``(n, *size)`` masks (instances may end up
        empty; the caller drops them)."""
        draws = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        if self.flip and draws[0] < 0.5:
            image, masks = image.flip(-1), masks.flip(-1)
        height, width = image.shape[-2:]
        target_h, target_w = self.size
        scale = self.min_scale + (self.max_scale - self.min_scale) * draws[1]
        factor = min(scale * target_h / height, scale * target_w / width)
        new_size = (max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5)))
        image, masks = resize(image, masks, new_size)
        top = int(draws[2] * (max(new_size[0] - target_h, 0) + 1))
        left = int(draws[3] * (max(new_size[1] - target_w, 0) + 1))
        image = image[:, top:top + target_h, left:left + target_w]
        masks = masks[:, top:top + target_h, left:left + target_w]
        pad = (0, target_w - image.shape[-1], 0, target_h - image.shape[-2])
        return F.pad(image, pad, value=PAD_VALUE), F.pad(masks, pad, value=False)
