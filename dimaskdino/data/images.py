"""Images without annotations: a folder (or a list) of JPEG / PNG files.

:class:`ImageFolder` reads like :class:`~dimaskdino.data.coco.CocoInstances` (same items,
with empty targets), so inference, the layer probe and drawing run on it unchanged; its
``has_annotations`` is False, which tells them to skip everything that needs labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from dimaskdino.data.coco import DatasetError, orientation, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(paths: Sequence[str | Path]) -> list[Path]:
    """The image files among ``paths``: files as given, folders' JPEG / PNG files (not
    recursive) in name order. Raises DatasetError for a missing path or when no image is
    found."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise DatasetError(f"image path not found: {path}")
    if not found:
        raise DatasetError(f"no JPEG or PNG images in {', '.join(map(str, paths))}")
    return found


class ImageFolder(Dataset):
    """``dataset[i]`` -> ``(image, target)``: ``image`` uint8 ``(3, H, W)`` RGB, ``target``
    with ``image_id`` (1-based position) and empty ``labels``, ``boxes``, ``masks``,
    ``iscrowd``. Every file's header is read up front, so an unreadable file fails before
    any work starts (DatasetError naming it)."""

    has_annotations = False

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.files = list_images(paths)
        self.images = [{"id": i + 1, "file_name": path.name, **_size(path)}
                       for i, path in enumerate(self.files)]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image = read_image(self.files[index])
        height, width = image.shape[-2:]
        target = {
            "image_id": self.images[index]["id"],
            "labels": torch.zeros(0, dtype=torch.int64),
            "boxes": torch.zeros(0, 4),
            "masks": torch.zeros(0, height, width, dtype=torch.bool),
            "iscrowd": torch.zeros(0, dtype=torch.bool),
        }
        return image, target


def _size(path: Path) -> dict[str, int]:
    try:
        with Image.open(path) as im:
            width, height = im.size
            if orientation(im) in (5, 6, 7, 8):  # EXIF: turned by 90 degrees when read
                width, height = height, width
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None
    return {"height": height, "width": width}
