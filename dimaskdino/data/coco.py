"""COCO-format instance-segmentation datasets: images with labels, boxes and masks.

Hostile input is handled so (the README's "Robustness" section lists it all):

* images are read as detectron2 reads them: the EXIF orientation is applied (a photo
  stored sideways is turned upright, as the annotations of such files expect), grayscale,
  palette, CMYK and alpha images are converted to RGB, 16-bit images are scaled to 8 bits
  (``value / 257``); the size after orientation must match the JSON's ``height`` and
  ``width``;
* a polygon of fewer than 3 points, or one covering no pixel, gives an empty mask: such an
  instance is dropped from training (as MaskDINO's LSJ mapper drops instances the crop
  empties) and stays a ground truth for evaluation;
* category ids may be any distinct integers or strings (non-contiguous, huge): classes
  are numbered in the JSON's category order;
* duplicate image or category ids, an annotation of an unlisted category, or an entry
  missing a field end with one :class:`DatasetError` line; annotations of unlisted images
  are ignored (``dimask data check`` lists them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

EXIF_ORIENTATION = 0x0112


class DatasetError(ValueError):
    """A dataset that cannot be read; one-line message naming the file and the problem."""


def is_number(value) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value)


def is_id(value) -> bool:
    """COCO ids are integers; strings are accepted too (pycocotools handles them)."""
    return isinstance(value, int | str) and not isinstance(value, bool)


def positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1: upright) of a just-opened image, read from its header
    without decoding it (so that ``verify()`` may still follow)."""
    if image.format == "TIFF":
        return image.getexif().get(EXIF_ORIENTATION, 1)
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return exif.get(EXIF_ORIENTATION, 1)


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of ``image`` once its EXIF orientation is applied."""
    width, height = image.size
    turned = orientation(image) in (5, 6, 7, 8)
    return (height, width) if turned else (width, height)


def to_rgb(image: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of any PIL image, upright (EXIF orientation applied);
    16-bit and 32-bit integer images are scaled from 0..65535 to 0..255."""
    if orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):  # I;16, I;16B, I (PNG 16-bit grayscale)
        gray = np.asarray(image, dtype=np.float64) / 257.0
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.array(image.convert("RGB"))


def clip_polygon(polygon: list, height: int, width: int) -> list[float]:
    """A polygon ``[x0, y0, x1, y1, ...]`` cut to the image's box widened by a pixel
    (Sutherland-Hodgman): the same pixels, but no vertex far outside, which would make
    pycocotools rasterise an edge millions of pixels long. ValueError for non-finite
    coordinates."""
    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise ValueError("a polygon has a non-finite coordinate")
    for axis, low, high in ((0, -1.0, width + 1.0), (1, -1.0, height + 1.0)):
        for bound, inside in ((low, np.greater_equal), (high, np.less_equal)):
            if len(points) == 0:
                return []
            kept = []
            for a, b in zip(points, np.roll(points, -1, axis=0)):
                a_in, b_in = inside(a[axis], bound), inside(b[axis], bound)
                if a_in:
                    kept.append(a)
                if a_in != b_in:
                    t = (bound - a[axis]) / (b[axis] - a[axis])
                    kept.append(a + t * (b - a))
            points = np.array(kept).reshape(-1, 2)
    return points.ravel().tolist()


def annotation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed or compressed RLE -> ``(H, W)`` bool mask; polygons of fewer
    than 3 points (which cover no area) are left out."""
    if isinstance(segmentation, list):  # polygons
        clipped = [clip_polygon(p, height, width) for p in segmentation
                   if isinstance(p, list) and len(p) >= 6]
        polygons = [p for p in clipped if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif list(segmentation.get("size", ())) != [height, width]:
        raise ValueError(f"RLE size {segmentation.get('size')!r} is not the image's "
                         f"[{height}, {width}]")
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def read_image(path: Path) -> torch.Tensor:
    """An image file as uint8 ``(3, H, W)`` RGB, upright (:func:`to_rgb`); DatasetError
    naming the file if unreadable."""
    try:
        with Image.open(path) as im:
            image = to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def _validate(data, path: Path) -> None:
    """DatasetError for what the reader cannot use (see the module docstring)."""
    if not isinstance(data, dict):
        raise DatasetError(f"{path} holds a JSON {type(data).__name__}, not an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path} has no '{key}' list")
    for kind, name, fields in (("categories", "category", ("id", "name")),
                               ("images", "image", ("id", "file_name"))):
        seen: set = set()
        for index, entry in enumerate(data[kind]):
            if not isinstance(entry, dict) or not is_id(entry.get("id")) or not all(
                    isinstance(entry.get(f), str) for f in fields[1:]):
                raise DatasetError(f"{path}: {kind} #{index} needs an id and a {fields[1]}")
            if entry["id"] in seen:
                raise DatasetError(f"{path}: {name} id {entry['id']!r} is used twice; ids "
                                   "must be unique")
            seen.add(entry["id"])
    categories = {c["id"] for c in data["categories"]}
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not is_id(ann.get("image_id")):
            raise DatasetError(f"{path}: annotation #{index} needs an image_id")
        if not is_id(ann.get("category_id")) or ann["category_id"] not in categories:
            raise DatasetError(f"{path}: annotation #{index} has category id "
                               f"{ann.get('category_id')!r}, which is not listed")


class CocoInstances(Dataset):
    """A COCO JSON + image folder.

    ``dataset[i]`` -> ``(image, target)``: ``image`` uint8 ``(3, H, W)`` RGB; ``target`` with
    ``image_id``, ``labels (n,)`` contiguous class ids (category order of the JSON),
    ``boxes (n, 4)`` xyxy pixels, ``masks (n, H, W)`` bool, ``iscrowd (n,)`` bool. Crowd
    regions are kept (flagged) so that training can ignore them and evaluation can use them.
    """

    has_annotations = True

    def __init__(self, annotation_file: str | Path, image_dir: str | Path) -> None:
        self.annotation_file, self.image_dir = Path(annotation_file), Path(image_dir)
        if not self.annotation_file.is_file():
            raise DatasetError(f"annotation file not found: {self.annotation_file}")
        try:
            data = json.loads(self.annotation_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise DatasetError(f"{self.annotation_file} is not valid JSON: {exc}") from None
        _validate(data, self.annotation_file)
        self.data = data
        self.category_ids = [c["id"] for c in data["categories"]]
        self.class_names = [c["name"] for c in data["categories"]]
        self._contiguous = {cid: i for i, cid in enumerate(self.category_ids)}
        self.images = sorted(data["images"], key=lambda im: (str(type(im["id"])), im["id"]))
        self._annotations: dict[int, list] = {im["id"]: [] for im in self.images}
        for ann in data["annotations"]:
            self._annotations.setdefault(ann["image_id"], []).append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        info = self.images[index]
        path = self.image_dir / info["file_name"]
        image = read_image(path)
        height, width = image.shape[-2:]
        if (info.get("width", width), info.get("height", height)) != (width, height):
            raise DatasetError(f"image {path} is {width}x{height} (EXIF orientation applied) "
                               f"but {self.annotation_file} says {info.get('width')}x"
                               f"{info.get('height')}")
        anns = self._annotations.get(info["id"], [])
        try:
            boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
            masks = torch.from_numpy(np.stack(
                [annotation_to_mask(a["segmentation"], height, width) for a in anns])
                if anns else np.zeros((0, height, width), dtype=bool))
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError,
                OverflowError) as exc:
            raise DatasetError(f"{self.annotation_file}: an annotation of image {info['id']!r}"
                               f" has a bbox or segmentation that cannot be read ({exc}); "
                               "`dimask data check` names it") from None
        boxes[:, 2:] += boxes[:, :2]
        target = {
            "image_id": info["id"],
            "labels": torch.tensor([self._contiguous[a["category_id"]] for a in anns],
                                   dtype=torch.int64),
            "boxes": boxes,
            "masks": masks,
            "iscrowd": torch.tensor([bool(a.get("iscrowd", 0)) for a in anns],
                                    dtype=torch.bool),
        }
        return image, target
