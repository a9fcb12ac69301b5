"""A synthetic "ImageNet" of shapes: object-centric images labelled by shape kind.

The tiny scale's backbone is pretrained on it by classification (``dimask pretrain``), as
the paper's backbones are pretrained on ImageNet before detection training. The images are
drawn by the detection set's renderer (:mod:`dimaskdino.data.synthetic`: the same shapes,
textured backgrounds and colours): one object of the labelled kind near the centre, at a
random size, angle and colour, with up to ``max_distractors`` other shapes around it, the
last of which may be drawn over it (partial occlusion). Every image is a function of
``(seed, split, index)`` through its own seed stream, so no image of the detection set
(whose streams are ``(seed, 0 | 1, index)``) appears in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from dimaskdino.config_ranges import above, at_least, between, check_ranges, ranged
from dimaskdino.data.synthetic import CLASSES, SEED_MAX, _background, draw_shape

# the first entry of every classification image's seed: a stream of its own
STREAM = 7
SPLITS = ("train", "val")


@dataclass(frozen=True)
class ShapesClassificationSpec:
    """What to draw: split sizes, square image size, the labelled object's radius range
    (log-uniform, pixels), distractors per image, the chance that one covers part of the
    object, seed."""

    num_train: int = ranged(16000, at_least(1))
    num_val: int = ranged(2000, at_least(1))
    size: int = ranged(64, at_least(8))
    min_radius: float = ranged(6.0, above(0))
    max_radius: float = ranged(28.0, at_least("min_radius"))
    max_distractors: int = ranged(1, at_least(0))
    occlusion: float = ranged(0.15, between(0, 1))
    seed: int = ranged(0, between(0, SEED_MAX))

    def __post_init__(self) -> None:
        check_ranges(self)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def render_example(rng: np.random.Generator, spec: ShapesClassificationSpec
                   ) -> tuple[np.ndarray, int]:
    """One image ``(size, size, 3)`` uint8 and its label (an index into ``CLASSES``)."""
    size = spec.size
    image = Image.fromarray(_background(rng, size, size))
    draw = ImageDraw.Draw(image)
    label = int(rng.integers(len(CLASSES)))
    radius = _log_uniform(rng, spec.min_radius, spec.max_radius)
    distractors = int(rng.integers(0, spec.max_distractors + 1))
    covers = distractors > 0 and rng.uniform() < spec.occlusion
    for index in range(distractors):
        if covers and index == distractors - 1:
            break
        _draw_random(rng, draw, CLASSES[int(rng.integers(len(CLASSES)))],
                     rng.uniform(0, size, 2), _log_uniform(rng, spec.min_radius, radius))
    centre = size / 2 + rng.uniform(-0.15, 0.15, 2) * size
    _draw_random(rng, draw, CLASSES[label], centre, radius)
    if covers:  # smaller than the object and off its centre: part of it stays visible
        angle = rng.uniform(0, 2 * np.pi)
        offset = radius * rng.uniform(0.8, 1.2) * np.array([np.cos(angle), np.sin(angle)])
        _draw_random(rng, draw, CLASSES[int(rng.integers(len(CLASSES)))], centre + offset,
                     radius * rng.uniform(0.3, 0.6))
    return np.asarray(image), label


def _draw_random(rng, draw, kind: str, centre, radius: float) -> None:
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    draw_shape(rng, kind, float(centre[0]), float(centre[1]), radius, ((draw, colour),))


def render_split(spec: ShapesClassificationSpec, split: str, progress=None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of ``split`` as ``(N, 3, size, size)`` uint8 and their labels ``(N,)``;
    ``progress(n)`` is called after every image."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    count = spec.num_train if split == "train" else spec.num_val
    images = np.empty((count, spec.size, spec.size, 3), np.uint8)
    labels = np.empty(count, np.int64)
    for index in range(count):
        rng = np.random.default_rng([STREAM, spec.seed, SPLITS.index(split), index])
        images[index], labels[index] = render_example(rng, spec)
        if progress is not None:
            progress(1)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
