"""BDD100K instance segmentation (``ins_seg``) converted to COCO JSON.

The official 10K layout is read::

    ROOT/images/10k/{train,val}/*.jpg
    ROOT/labels/ins_seg/bitmasks/{train,val}/*.png          (preferred when present)
    ROOT/labels/ins_seg/rles/ins_seg_{train,val}.json       (Scalabel frames with RLE masks)

*Bitmasks* are RGBA PNGs, one per image: R is the category id (1..8, 0 = background), G holds
the attribute bits ``truncated << 3 | occluded << 2 | crowd << 1 | ignore`` and the instance
id is ``B * 256 + A`` (0 = no instance). *RLE labels* are a JSON list of Scalabel frames,
``{"name": "xxx.jpg", "labels": [{"id", "category", "attributes", "rle": {"counts", "size"}}]}``
with COCO-compressed RLE strings.

Both give the same COCO file: categories 1..8 in BDD100K's order (:data:`CLASSES`), one
annotation per instance with a compressed RLE segmentation (``counts`` as a string), the
bbox (xywh) and area of its mask, and the four BDD100K flags kept under ``attributes``.

Crowd and ignore: BDD100K's evaluation does not score instances flagged ``crowd`` or
``ignore`` (Scalabel's COCO conversion sets ``iscrowd = crowd or ignored``), so both become
``iscrowd: 1`` here: the COCO evaluator then neither counts them as missed nor penalises
detections on them, and training treats them as crowd regions. The RLE attribute is
accepted as ``ignore`` or Scalabel's ``ignored``.

Dropped, and counted in the summary: instances of categories outside the eight (other
names in the JSON, other R values in a PNG), instances with an empty mask, and images whose
JPEG is missing from ``images/10k/{split}``. Images without any instance are kept.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from rich.progress import Progress
from scipy import ndimage

from dimaskdino.data.coco import DatasetError
from dimaskdino.fileio import atomic_write_text
from dimaskdino.progress import progress_bar

CLASSES = ("pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
SPLITS = ("train", "val")
DEFAULT_SIZE = (720, 1280)  # (H, W) of every BDD100K image
_FLAGS = ("ignore", "crowd", "occluded", "truncated")  # bit 0..3 of a bitmask's G channel


@dataclass
class _Tally:
    """What a conversion left out: instances by category name, empty masks, missing images."""

    dropped: Counter = field(default_factory=Counter)
    empty_masks: int = 0
    missing_images: int = 0


def _annotation(mask_rle: dict, category_id: int, flags: dict[str, bool]) -> dict:
    """A COCO annotation (without ids) for one instance given as compressed RLE."""
    x, y, w, h = (float(v) for v in mask_utils.toBbox(mask_rle))
    counts = mask_rle["counts"]
    return {
        "category_id": category_id,
        "segmentation": {"size": [int(s) for s in mask_rle["size"]],
                         "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts},
        "area": float(mask_utils.area(mask_rle)),
        "bbox": [x, y, w, h],
        "iscrowd": int(flags["crowd"] or flags["ignore"]),
        "attributes": flags,
    }


def _bitmask_annotations(path: Path, tally: _Tally) -> tuple[tuple[int, int], list[dict]]:
    """``(H, W)`` of one bitmask PNG and its instances as COCO annotations, in instance-id
    order; instances of other categories are counted in ``tally`` (as ``id N``)."""
    try:
        with Image.open(path) as im:
            if im.mode != "RGBA":
                raise DatasetError(f"{path} is not an RGBA bitmask (mode {im.mode})")
            pixels = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL: SyntaxError for a broken PNG
        raise DatasetError(f"cannot read bitmask {path}: {exc}") from None
    height, width = pixels.shape[:2]
    category, attributes = pixels[..., 0], pixels[..., 1]
    instance = pixels[..., 2].astype(np.int32) << 8 | pixels[..., 3]
    annotations = []
    # the bounding slices of every instance id present, so each mask is compared locally
    for index, box in enumerate(ndimage.find_objects(instance)):
        if box is None:
            continue
        local = instance[box] == index + 1
        category_id = int(np.bincount(category[box][local]).argmax())
        if not 1 <= category_id <= len(CLASSES):
            tally.dropped[f"id {category_id}"] += 1
            continue
        bits = int(np.bincount(attributes[box][local]).argmax())
        mask = np.zeros((height, width), dtype=np.uint8, order="F")
        mask[box] = local
        flags = {name: bool(bits >> bit & 1) for bit, name in enumerate(_FLAGS)}
        annotations.append(_annotation(mask_utils.encode(mask), category_id, flags))
    return (height, width), annotations


def _rle_annotations(frame: dict, tally: _Tally) -> tuple[tuple[int, int] | None, list[dict]]:
    """``(H, W)`` (from the first mask; None without any) and the COCO annotations of one
    Scalabel frame, in label order; other categories and missing or empty masks are
    counted in ``tally``."""
    size, annotations = None, []
    for label in frame.get("labels") or []:
        name, rle = label.get("category"), label.get("rle")
        if name not in CLASSES:
            tally.dropped[str(name)] += 1
            continue
        if not rle or mask_utils.area(rle) == 0:
            tally.empty_masks += 1
            continue
        attributes = label.get("attributes") or {}
        flags = {"ignore": bool(attributes.get("ignore") or attributes.get("ignored")),
                 **{flag: bool(attributes.get(flag)) for flag in _FLAGS[1:]}}
        annotation = _annotation({"size": list(rle["size"]), "counts": rle["counts"]},
                                 CLASSES.index(name) + 1, flags)
        size = size or (int(rle["size"][0]), int(rle["size"][1]))
        annotations.append(annotation)
    return size, annotations


def _layout(root: Path, split: str) -> tuple[Path, str, Path]:
    """The image folder of a split, its label source (``bitmasks`` preferred) and the
    labels' path; DatasetError naming the expected path when one is missing."""
    images = root / "images" / "10k" / split
    if not images.is_dir():
        raise DatasetError(f"BDD100K {split} images not found: expected the folder {images}")
    bitmasks = root / "labels" / "ins_seg" / "bitmasks" / split
    rles = root / "labels" / "ins_seg" / "rles" / f"ins_seg_{split}.json"
    if bitmasks.is_dir():
        return images, "bitmasks", bitmasks
    if rles.is_file():
        return images, "rles", rles
    raise DatasetError(f"BDD100K {split} labels not found: expected the folder {bitmasks} or "
                       f"the file {rles}")


def _image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the image header, or BDD100K's size if the header cannot be read."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except OSError:
        return DEFAULT_SIZE


def _items(kind: str, labels: Path) -> list[tuple[str, Path | dict]]:
    """``(image file name, label item)`` per image: a PNG path or a Scalabel frame."""
    if kind == "bitmasks":
        return [(png.stem + ".jpg", png) for png in sorted(labels.glob("*.png"))]
    try:
        frames = json.loads(labels.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{labels} is not valid JSON: {exc}") from None
    if isinstance(frames, dict):  # a Scalabel dataset object rather than a bare frame list
        frames = frames.get("frames")
    if not isinstance(frames, list) or not all(
            isinstance(frame, dict) and isinstance(frame.get("name"), str) for frame in frames):
        raise DatasetError(f"{labels} is not a list of Scalabel frames with names")
    return [(frame["name"], frame) for frame in frames]


def convert_split(root: str | Path, split: str, progress: Progress) -> tuple[dict, dict]:
    """One split of BDD100K as a COCO dict, and a summary: the label source and path,
    counts of images, annotations and crowd (including ignore) annotations, dropped
    instances by category, empty masks and missing images."""
    image_dir, kind, labels = _layout(Path(root), split)
    items = _items(kind, labels)
    task = progress.add_task(f"{split} ({kind})", total=len(items), status="")
    images, annotations, tally = [], [], _Tally()
    for file_name, item in items:
        if not (image_dir / file_name).is_file():
            tally.missing_images += 1
        else:
            if kind == "bitmasks":
                size, anns = _bitmask_annotations(item, tally)
            else:
                try:
                    size, anns = _rle_annotations(item, tally)
                except (KeyError, TypeError, ValueError, IndexError) as exc:
                    raise DatasetError(f"{labels}: frame {file_name} has a malformed label "
                                       f"({type(exc).__name__}: {exc})") from None
                size = size or _image_size(image_dir / file_name)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": file_name, "height": size[0],
                           "width": size[1]})
            annotations += [{"id": len(annotations) + k + 1, "image_id": image_id, **ann}
                            for k, ann in enumerate(anns)]
        progress.advance(task)
    dataset = {
        "info": {"description": f"BDD100K ins_seg {split}, converted from {kind}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)],
    }
    summary = {
        "labels": kind,
        "label_path": str(labels),
        "images": len(images),
        "annotations": len(annotations),
        "crowd": sum(a["iscrowd"] for a in annotations),
        "dropped": dict(sorted(tally.dropped.items())),
        "empty_masks": tally.empty_masks,
        "missing_images": tally.missing_images,
    }
    return dataset, summary


def prepare_bdd100k(root: str | Path, out_dir: str | Path, progress: bool = True) -> dict:
    """Convert ``ROOT``'s train and val instance-segmentation labels into
    ``out_dir/instances_{train,val}.json`` (see the module docstring for the layout).

    Returns ``{"root", "out_dir", "splits": {split: {"annotation_file", "labels",
    "label_path", "images", "annotations", "crowd", "dropped", "empty_masks",
    "missing_images"}}}``.
    Raises DatasetError naming the expected path when the layout is incomplete; both
    splits are checked before anything is converted.
    """
    root, out_dir = Path(root).expanduser(), Path(out_dir).expanduser()
    for split in SPLITS:
        _layout(root, split)
    summary: dict = {"root": str(root), "out_dir": str(out_dir), "splits": {}}
    with progress_bar(disable=not progress, stderr=True) as bar:
        for split in SPLITS:
            dataset, counts = convert_split(root, split, bar)
            path = out_dir / f"instances_{split}.json"
            atomic_write_text(path, json.dumps(dataset))
            summary["splits"][split] = {"annotation_file": str(path), **counts}
    return summary
