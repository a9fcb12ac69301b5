"""A synthetic COCO-format instance-segmentation dataset that needs no download.

Images show filled shapes of six classes on textured backgrounds. Shapes overlap: later
shapes occlude earlier ones, and every annotation describes the *visible* part. Sizes are
drawn so that COCO's small (< 32^2 px), medium and large (> 96^2 px) ranges all occur.
Unoccluded polygons are stored as polygons (the exact vertices that were drawn); occluded
or round shapes as RLE of their visible mask. Everything is a function of the seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from dimaskdino.config_ranges import at_least, between, check_ranges, ranged
from dimaskdino.fileio import atomic_write_text

CLASSES = ("circle", "square", "triangle", "ellipse", "star", "cross")
POLYGON_CLASSES = ("square", "triangle", "star", "cross")
MIN_VISIBLE_AREA = 16
MIN_SIDE = 16  # the smallest image side the shapes are drawn on
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are unsigned; 32 bits everywhere


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: split sizes, image size ``(H, W)``, objects per image, seed."""

    num_train: int = ranged(64, at_least(1))
    num_val: int = ranged(16, at_least(1))
    height: int = ranged(256, at_least(MIN_SIDE))
    width: int = ranged(320, at_least(MIN_SIDE))
    max_objects: int = ranged(6, at_least(1))
    seed: int = ranged(0, between(0, SEED_MAX))

    def __post_init__(self) -> None:
        check_ranges(self)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple]:
    if kind == "square":
        points = [(math.cos(angle + k * math.pi / 2 + math.pi / 4), math.sin(
            angle + k * math.pi / 2 + math.pi / 4)) for k in range(4)]
    elif kind == "triangle":
        points = [(math.cos(angle + k * 2 * math.pi / 3), math.sin(angle + k * 2 * math.pi / 3))
                  for k in range(3)]
    elif kind == "star":
        points = [((1.0 if k % 2 == 0 else 0.45) * math.cos(angle + k * math.pi / 5),
                   (1.0 if k % 2 == 0 else 0.45) * math.sin(angle + k * math.pi / 5))
                  for k in range(10)]
    elif kind == "cross":
        arm = 0.35
        base = [(arm, 1), (arm, arm), (1, arm), (1, -arm), (arm, -arm), (arm, -1), (-arm, -1),
                (-arm, -arm), (-1, -arm), (-1, arm), (-arm, arm), (-arm, 1)]
        c, s = math.cos(angle), math.sin(angle)
        points = [(x * c - y * s, x * s + y * c) for x, y in base]
    else:
        raise ValueError(kind)
    return [(cx + r * x, cy + r * y) for x, y in points]


def draw_shape(rng: np.random.Generator, kind: str, cx: float, cy: float, radius: float,
               canvases) -> list[tuple] | None:
    """Draw one shape of ``kind`` centred at ``(cx, cy)`` on every ``(ImageDraw, fill)`` of
    ``canvases``; its angle (polygons) or aspect ratio (ellipses) is drawn from ``rng``.
    Returns the polygon's vertices, or None for round shapes."""
    if kind in POLYGON_CLASSES:
        polygon = _polygon(kind, cx, cy, radius, float(rng.uniform(0, 2 * math.pi)))
        for draw, fill in canvases:
            draw.polygon(polygon, fill=fill)
        return polygon
    ry = radius * (rng.uniform(0.4, 0.8) if kind == "ellipse" else 1.0)
    for draw, fill in canvases:
        draw.ellipse((cx - radius, cy - ry, cx + radius, cy + ry), fill=fill)
    return None


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour gradient + stripes + noise, (H, W, 3) uint8."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-0.3, 0.3, (2, 3))
    period, phase = rng.uniform(8, 40), rng.uniform(0, 2 * np.pi)
    direction = rng.uniform(0, np.pi)
    stripes = 18 * np.sin((xs * np.cos(direction) + ys * np.sin(direction)) / period + phase)
    image = (base + xs[..., None] * slope[0] + ys[..., None] * slope[1] + stripes[..., None]
             + rng.normal(0, 12, (height, width, 3)))
    return np.clip(image, 0, 255).astype(np.uint8)


def _render(rng: np.random.Generator, spec: SyntheticSpec):
    """One image and the visible annotation of each object on it."""
    height, width = spec.height, spec.width
    image = Image.fromarray(_background(rng, height, width))
    ids = Image.new("I", (width, height), 0)
    draw, draw_ids = ImageDraw.Draw(image), ImageDraw.Draw(ids)
    objects = []
    for index in range(int(rng.integers(1, spec.max_objects + 1))):
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        # radius from a log-uniform area: small, medium and large objects all occur
        radius = float(np.exp(rng.uniform(np.log(4), np.log(min(height, width) * 0.35))))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        polygon = draw_shape(rng, kind, cx, cy, radius, ((draw, colour), (draw_ids, index + 1)))
        objects.append((kind, polygon))
    id_map = np.asarray(ids)
    annotations = []
    for index, (kind, polygon) in enumerate(objects):
        visible = id_map == index + 1
        area = int(visible.sum())
        if area < MIN_VISIBLE_AREA:
            continue
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        if polygon is not None and _inside(polygon, width, height) and not _occluded(
                polygon, id_map, index + 1):
            segmentation = [[float(c) for point in polygon for c in point]]
        else:
            rle["counts"] = rle["counts"].decode("ascii")
            segmentation = rle
        annotations.append({"category_id": CLASSES.index(kind) + 1, "bbox": [x, y, w, h],
                            "area": float(area), "segmentation": segmentation, "iscrowd": 0})
    return image, annotations


def _occluded(polygon, id_map: np.ndarray, object_id: int) -> bool:
    """Whether a later object covers any pixel the polygon was drawn on."""
    canvas = Image.new("1", (id_map.shape[1], id_map.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon(polygon, fill=1)
    return bool((id_map[np.asarray(canvas, dtype=bool)] != object_id).any())


def _inside(polygon, width: int, height: int) -> bool:
    return all(0 <= x <= width and 0 <= y <= height for x, y in polygon)


def write_synthetic_dataset(root: str | Path, spec: SyntheticSpec | None = None) -> dict:
    """Write ``root/{train,val}/*.png`` and ``root/annotations/instances_{train,val}.json``.

    Returns the paths as ``{"train": (json, image_dir), "val": (json, image_dir)}``. Files
    are written atomically; an existing dataset of the same spec is left as it is.
    """
    spec = spec or SyntheticSpec()
    root = Path(root)
    out = {}
    for split, count, offset in (("train", spec.num_train, 0), ("val", spec.num_val, 1)):
        image_dir, ann_file = root / split, root / "annotations" / f"instances_{split}.json"
        out[split] = (ann_file, image_dir)
        if ann_file.exists():
            continue
        image_dir.mkdir(parents=True, exist_ok=True)
        ann_file.parent.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            rng = np.random.default_rng([spec.seed, offset, index])
            image, anns = _render(rng, spec)
            name = f"{index:06d}.png"
            image.save(image_dir / name)
            images.append({"id": index + 1, "file_name": name, "height": spec.height,
                           "width": spec.width})
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": index + 1, **ann})
        dataset = {"images": images, "annotations": annotations,
                   "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)],
                   "info": {"description": "dimask synthetic shapes", "spec": spec.__dict__}}
        atomic_write_text(ann_file, json.dumps(dataset))
    return out
