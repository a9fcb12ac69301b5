"""Turn a list of images into one normalized, padded batch (detectron2's ImageList)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def batch_images(images: Sequence[torch.Tensor], pixel_mean: torch.Tensor,
                 pixel_std: torch.Tensor, size_divisibility: int = 32,
                 ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Normalize each ``(3, H_i, W_i)`` image, then zero-pad all to one size.

    Args:
        images: uint8 or float tensors ``(3, H_i, W_i)`` in the model's channel order.
        pixel_mean, pixel_std: ``(3,)``; the batch takes their dtype and device.
        size_divisibility: the padded height and width are multiples of this.

    Returns:
        ``(B, 3, H, W)`` with ``H = ceil(max H_i / d) * d`` (likewise ``W``), zero beyond
        each image (padding after normalization, as the official models do), and the
        ``(H_i, W_i)`` of every image.
    """
    if not images:
        raise ValueError("batch_images needs at least one image")
    mean = pixel_mean.reshape(-1, 1, 1)
    std = pixel_std.reshape(-1, 1, 1)
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    height = math.ceil(max(h for h, _ in sizes) / size_divisibility) * size_divisibility
    width = math.ceil(max(w for _, w in sizes) / size_divisibility) * size_divisibility
    batch = torch.stack([
        F.pad((img.to(device=mean.device, dtype=mean.dtype) - mean) / std,
              (0, width - w, 0, height - h))
        for img, (h, w) in zip(images, sizes)
    ])
    return batch, sizes
