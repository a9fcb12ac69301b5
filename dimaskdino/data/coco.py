"""COCO-format instance-segmentation datasets: images with labels, boxes and masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset


class DatasetError(ValueError):
    """A dataset that cannot be read; one-line message naming the file and the problem."""


def annotation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed or compressed RLE -> ``(H, W)`` bool mask."""
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def read_image(path: Path) -> torch.Tensor:
    """An image file as uint8 ``(3, H, W)`` RGB; DatasetError naming the file if unreadable."""
    try:
        with Image.open(path) as im:
            image = np.array(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


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
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{self.annotation_file} is not valid JSON: {exc}") from None
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DatasetError(f"{self.annotation_file} has no '{key}' list")
        self.data = data
        self.category_ids = [c["id"] for c in data["categories"]]
        self.class_names = [c["name"] for c in data["categories"]]
        self._contiguous = {cid: i for i, cid in enumerate(self.category_ids)}
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self._annotations: dict[int, list] = {im["id"]: [] for im in self.images}
        for ann in data["annotations"]:
            self._annotations.setdefault(ann["image_id"], []).append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        info = self.images[index]
        image = read_image(self.image_dir / info["file_name"])
        height, width = image.shape[-2:]
        anns = self._annotations.get(info["id"], [])
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        masks = torch.from_numpy(np.stack(
            [annotation_to_mask(a["segmentation"], height, width) for a in anns])
            if anns else np.zeros((0, height, width), dtype=bool))
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
