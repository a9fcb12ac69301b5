"""Check a COCO-format instance-segmentation dataset, or a folder of images without
annotations (``images:DIR``), before training on it or predicting on it.

:func:`check_dataset` reads the JSON and every image once and returns a
:class:`CheckReport`: a summary (images, annotations, categories, instances per category,
crowd annotations, images without annotations) and a list of :class:`Problem`, each with a
kind code and a sentence naming the image or annotation. Images without annotations are a
warning in the summary, not a problem. The kinds:

* ``invalid-json``: the file is missing, not JSON, or not a JSON object;
* ``missing-key``: no ``images``, ``annotations`` or ``categories`` list;
* ``malformed-entry``: an image, annotation or category lacks a field or has a bad type;
* ``bad-categories``: the category list is empty;
* ``duplicate-category-id``, ``duplicate-image-id``, ``duplicate-annotation-id``;
* ``unknown-image-id``, ``unknown-category-id``: an annotation refers to an id not listed;
* ``missing-image``: the image file does not exist;
* ``undecodable-image``: the image file cannot be decoded;
* ``size-mismatch``: the image's size (after its EXIF orientation, as training reads it)
  differs from its ``height`` and ``width``;
* ``bad-bbox``: a bbox is not 4 numbers, has a non-positive size, or leaves the image;
* ``bbox-mask-mismatch``: a bbox disagrees with its mask's box (IoU below 0.9 and an edge
  more than 2 px off, since rasterisation moves edges by a pixel or so);
* ``invalid-segmentation``: an empty mask, a polygon of fewer than 3 points, an RLE of
  another size than its image or with corrupt counts, or neither polygons nor RLE;
* ``no-images``: an image folder without a JPEG or PNG file;
* ``bad-orientation``: an EXIF orientation outside 1..8 (it is ignored when reading).

An image folder's report has no annotations or categories; its summary counts the images
per mode (``RGB``, ``L``, ``I;16``..., all read as RGB), the ones turned upright by their
EXIF orientation and the smallest and largest upright size.

Speed: masks are never decoded to pixels. pycocotools turns polygons into RLE and gives
each RLE's area and box directly; a polygon's box is its vertices' extent (which is how
COCO defines it). Images are opened with PIL, which reads the size from the header; by
default each image is then fully decoded (``decode_images=True``) in a thread pool, since
PIL's ``verify()`` does not notice a truncated JPEG, the most common broken file. With
``decode_images=False`` only ``verify()`` runs: much faster, catches files that are not
images and corrupt PNGs, but not truncated JPEGs.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from pycocotools import mask as mask_utils
from rich.progress import Progress

from dimaskdino.data.coco import DatasetError, clip_polygon, orientation, oriented_size
from dimaskdino.data.coco import is_id as _is_id
from dimaskdino.data.coco import is_number as _is_number
from dimaskdino.data.coco import positive_int as _positive_int
from dimaskdino.data.images import list_images
from dimaskdino.data.specs import DatasetSource
from dimaskdino.progress import progress_bar

BBOX_MASK_MIN_IOU = 0.9
BBOX_MASK_TOLERANCE_PX = 2.0  # rasterisation may move a mask's box edge by a pixel or two
BBOX_OUTSIDE_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: a kind code (see the module docstring) and a sentence."""

    kind: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: a summary and the problems (empty when valid)."""

    annotation_file: Path | None  # None for an image folder
    image_dir: Path
    images: int = 0
    annotations: int = 0
    categories: int = 0
    per_category: dict[str, int] = field(default_factory=dict)  # annotations per name
    crowd: int = 0
    images_without_annotations: int = 0
    problems: list[Problem] = field(default_factory=list)
    # image folders: images per mode, how many EXIF turns, smallest and largest (W, H)
    modes: dict[str, int] = field(default_factory=dict)
    rotated: int = 0
    sizes: tuple[tuple[int, int], tuple[int, int]] | None = None

    @property
    def ok(self) -> bool:
        """Whether no problem was found (empty images do not count)."""
        return not self.problems

    def kinds(self) -> Counter:
        """How many problems of each kind."""
        return Counter(problem.kind for problem in self.problems)


def _iou(a: list[float], b: list[float]) -> float:
    """IoU of two xywh boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class _InvalidSegmentation(ValueError):
    """Why a segmentation does not describe a usable mask."""


def _polygons(segmentation: list, height: int, width: int) -> tuple[dict, list[float]]:
    """RLE and box (the vertices' extent, as COCO defines it) of a polygon segmentation."""
    if not segmentation or not all(isinstance(p, list) for p in segmentation):
        raise _InvalidSegmentation("polygon segmentation is not a list of coordinate lists")
    for polygon in segmentation:
        # pycocotools would read a 4-number polygon as a box: check before converting
        if len(polygon) < 6 or len(polygon) % 2 or not all(map(_is_number, polygon)):
            raise _InvalidSegmentation(f"a polygon has {len(polygon) / 2:g} points; at least "
                                       "3 (x, y) pairs are needed")
    xs = [v for polygon in segmentation for v in polygon[0::2]]
    ys = [v for polygon in segmentation for v in polygon[1::2]]
    clipped = [p for p in (clip_polygon(p, height, width) for p in segmentation) if len(p) >= 6]
    if not clipped:
        raise _InvalidSegmentation("the mask covers no pixel")
    rle = mask_utils.merge(mask_utils.frPyObjects(clipped, height, width))
    return rle, [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _rle(segmentation: dict, height: int, width: int) -> tuple[dict, list[float]]:
    """Compressed RLE and box of an RLE segmentation (compressed or not)."""
    size = segmentation["size"]
    if not isinstance(size, list | tuple) or list(size) != [height, width]:
        raise _InvalidSegmentation(f"RLE size {size!r} differs from the image's "
                                   f"[{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != (
                height * width):
            raise _InvalidSegmentation(f"uncompressed RLE counts do not sum to {height}x{width}"
                                       " pixels")
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(counts, str | bytes):
        rle = {"size": [height, width], "counts": counts}
    else:
        raise _InvalidSegmentation("RLE counts are neither a string nor a list")
    box = [float(v) for v in mask_utils.toBbox(rle)]
    if box[0] + box[2] > width or box[1] + box[3] > height:  # a corrupt counts string
        raise _InvalidSegmentation(f"RLE counts run past the {width}x{height} image")
    return rle, box


def _segmentation_box(segmentation, height: int, width: int) -> list[float]:
    """The box (xywh) of a non-empty segmentation; _InvalidSegmentation otherwise.

    Masks are measured as RLE (never decoded to pixels), so a polygon that covers no pixel
    counts as empty.
    """
    if isinstance(segmentation, list):
        rle, box = _polygons(segmentation, height, width)
    elif isinstance(segmentation, dict) and {"size", "counts"} <= segmentation.keys():
        rle, box = _rle(segmentation, height, width)
    else:
        raise _InvalidSegmentation("segmentation is neither polygons nor an RLE with size and "
                                   "counts")
    if mask_utils.area(rle) == 0:
        raise _InvalidSegmentation("the mask covers no pixel")
    return box


def _bbox_problem(bbox, height: int, width: int) -> str | None:
    """Why a bbox is invalid for an image of this size, or None."""
    if not isinstance(bbox, list | tuple) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        return f"bbox {bbox!r} is not 4 numbers"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"bbox {list(bbox)} has a non-positive width or height"
    tol = BBOX_OUTSIDE_TOLERANCE_PX
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        return f"bbox {list(bbox)} extends outside the {width}x{height} image"
    return None


@dataclass(frozen=True)
class ImageFile:
    """What the header says of one image file: mode, EXIF orientation, size once upright."""

    mode: str
    orientation: int
    width: int
    height: int


def _read_file(path: Path, label: str, decode: bool) -> ImageFile | Problem:
    """Open (and decode, or only ``verify()``) one image file; a Problem if it cannot be."""
    try:
        with Image.open(path) as im:
            info = ImageFile(im.mode, orientation(im), *oriented_size(im))
            if decode:
                im.load()
            else:
                im.verify()
    except FileNotFoundError:
        return Problem("missing-image", f"{label}: file not found: {path}")
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises SyntaxError for bad PNGs
        return Problem("undecodable-image", f"{label}: cannot decode {path}: "
                       f"{str(exc) or type(exc).__name__}")
    return info


def _image_problem(image: dict, path: Path, decode: bool) -> Problem | None:
    """Whether one image file exists, decodes and has the size its entry says."""
    info = _read_file(path, f"image {image['id']}", decode)
    if isinstance(info, Problem):
        return info
    if (info.width, info.height) != (image["width"], image["height"]):
        return Problem("size-mismatch", f"image {image['id']}: {path} is {info.width}x"
                       f"{info.height} but the JSON says {image['width']}x{image['height']}")
    return None


def _load_json(path: Path, report: CheckReport) -> dict | None:
    """The parsed file, or None after recording why it cannot be used."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        report.problems.append(Problem("invalid-json", f"annotation file not found: {path}"))
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        report.problems.append(Problem("invalid-json", f"{path} is not valid JSON: {exc}"))
        return None
    if not isinstance(data, dict):
        report.problems.append(Problem("invalid-json", f"{path} holds a JSON "
                                       f"{type(data).__name__}, not an object"))
        return None
    missing = [key for key in ("images", "annotations", "categories")
               if not isinstance(data.get(key), list)]
    for key in missing:
        report.problems.append(Problem("missing-key", f"{path} has no '{key}' list"))
    return None if missing else data


def _index_by_id(entries: list, kind: str, well_formed, requirement: str, label,
                 report: CheckReport) -> dict:
    """Id -> entry of the well-formed entries, recording malformed entries and duplicate ids.

    ``well_formed(entry)`` says whether an entry has the fields it needs (``requirement`` says
    which, in the message); ``label(entry)`` names an entry in a duplicate-id message.
    """
    by_id: dict = {}
    for index, entry in enumerate(entries):
        if not well_formed(entry):
            report.problems.append(Problem("malformed-entry", f"{kind} #{index} {requirement}"))
        elif entry["id"] in by_id:
            report.problems.append(Problem(
                f"duplicate-{kind}-id", f"{kind} id {entry['id']} is used twice "
                                        f"({label(by_id[entry['id']])} and {label(entry)})"))
        else:
            by_id[entry["id"]] = entry
    return by_id


def _check_categories(categories: list, report: CheckReport) -> dict:
    """Category id -> name, recording empty lists, malformed entries and duplicate ids."""
    if not categories:
        report.problems.append(Problem("bad-categories", "the categories list is empty"))
    by_id = _index_by_id(
        categories, "category",
        lambda c: isinstance(c, dict) and _is_id(c.get("id")) and isinstance(c.get("name"), str),
        "lacks an id or a name", lambda c: repr(c["name"]), report)
    report.categories = len(by_id)
    return {category_id: category["name"] for category_id, category in by_id.items()}


def _check_images(images: list, report: CheckReport) -> dict:
    """Image id -> entry, recording malformed entries and duplicate ids."""
    by_id = _index_by_id(
        images, "image",
        lambda i: isinstance(i, dict) and isinstance(i.get("file_name"), str) and _is_id(
            i.get("id")) and _positive_int(i.get("height")) and _positive_int(i.get("width")),
        "needs an id, a file_name and positive integer height and width",
        lambda i: i["file_name"], report)
    report.images = len(by_id)
    return by_id


def _check_files(images: dict, image_dir: Path, report: CheckReport, decode: bool,
                 workers: int, progress: Progress) -> None:
    """Existence, decodability and size of every listed image file."""
    task = progress.add_task("images", total=len(images), status="")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for problem in pool.map(
                lambda image: _image_problem(image, image_dir / image["file_name"], decode),
                images.values()):
            if problem is not None:
                report.problems.append(problem)
            progress.advance(task)


def _check_annotation(ann: dict, image: dict, report: CheckReport) -> None:
    """Bbox and segmentation of one annotation against its image."""
    where = f"annotation {ann['id']} (image {image['id']})"
    height, width = image["height"], image["width"]
    bbox_error = _bbox_problem(ann.get("bbox"), height, width)
    if bbox_error:
        report.problems.append(Problem("bad-bbox", f"{where}: {bbox_error}"))
    if "segmentation" not in ann:
        report.problems.append(Problem("invalid-segmentation", f"{where}: no segmentation"))
        return
    try:
        box = _segmentation_box(ann["segmentation"], height, width)
    except _InvalidSegmentation as exc:
        report.problems.append(Problem("invalid-segmentation", f"{where}: {exc}"))
        return
    if not bbox_error:
        bbox = [float(v) for v in ann["bbox"]]
        off = max(abs(bbox[0] - box[0]), abs(bbox[1] - box[1]),
                  abs(bbox[0] + bbox[2] - box[0] - box[2]),
                  abs(bbox[1] + bbox[3] - box[1] - box[3]))
        iou = _iou(bbox, box)
        if iou < BBOX_MASK_MIN_IOU and off > BBOX_MASK_TOLERANCE_PX:
            report.problems.append(Problem(
                "bbox-mask-mismatch", f"{where}: bbox {[round(v, 1) for v in bbox]} disagrees "
                f"with its mask's box {[round(v, 1) for v in box]} (IoU {iou:.2f})"))


def _check_annotations(annotations: list, images: dict, categories: dict,
                       report: CheckReport, progress: Progress) -> None:
    """Ids, references, crowd flags and geometry of every annotation; fills the summary."""
    seen: set = set()
    per_category: Counter = Counter()
    annotated: set = set()
    task = progress.add_task("annotations", total=len(annotations), status="")
    for index, ann in enumerate(annotations):
        progress.advance(task)
        if not isinstance(ann, dict) or not all(
                _is_id(ann.get(k)) for k in ("id", "image_id", "category_id")):
            report.problems.append(Problem("malformed-entry", f"annotation #{index} needs an "
                                           "id, an image_id and a category_id"))
            continue
        if ann["id"] in seen:
            report.problems.append(Problem("duplicate-annotation-id",
                                           f"annotation id {ann['id']} is used twice"))
        seen.add(ann["id"])
        report.annotations += 1
        report.crowd += bool(ann.get("iscrowd", 0))
        image = images.get(ann["image_id"])
        if image is None:
            report.problems.append(Problem("unknown-image-id", f"annotation {ann['id']} refers "
                                           f"to image id {ann['image_id']}, which is not "
                                           "listed"))
        else:
            annotated.add(ann["image_id"])
        if ann["category_id"] not in categories:
            report.problems.append(Problem("unknown-category-id", f"annotation {ann['id']} "
                                           f"has category id {ann['category_id']}, which is "
                                           "not listed"))
        else:
            per_category[categories[ann["category_id"]]] += 1
        if image is not None:
            _check_annotation(ann, image, report)
    report.per_category = {name: per_category[name] for name in categories.values()}
    report.images_without_annotations = len(images.keys() - annotated)


def _check_folder(report: CheckReport, decode: bool, workers: int, progress: Progress
                  ) -> None:
    """Every JPEG / PNG of ``report.image_dir``: decodes, its mode, orientation and size."""
    try:
        files = list_images([report.image_dir])
    except DatasetError as exc:
        report.problems.append(Problem("no-images", f"{exc}: nothing to predict on"))
        return
    report.images = len(files)
    task = progress.add_task("images", total=len(files), status="")
    modes: Counter = Counter()
    sizes = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, info in zip(files, pool.map(
                lambda path: _read_file(path, f"image {path.name}", decode), files)):
            progress.advance(task)
            if isinstance(info, Problem):
                report.problems.append(info)
                continue
            modes[info.mode] += 1
            sizes.append((info.width * info.height, info.width, info.height))
            if info.orientation not in range(1, 9):
                report.problems.append(Problem(
                    "bad-orientation", f"image {path.name}: EXIF orientation "
                    f"{info.orientation} is not one of 1..8 (read as stored)"))
            report.rotated += info.orientation in range(2, 9)
    report.modes = dict(modes.most_common())
    if sizes:
        report.sizes = (min(sizes)[1:], max(sizes)[1:])


def check_dataset(source: DatasetSource | tuple[str | Path, str | Path], *,
                  decode_images: bool = True, workers: int | None = None,
                  progress: bool = False) -> CheckReport:
    """Check one COCO JSON and its image folder; see the module docstring for what is
    checked. ``source`` is a resolved spec or ``(annotation_file, image_dir)``.

    ``decode_images`` fully decodes every image (else only PIL's ``verify()``), with
    ``workers`` threads (default: the CPU count, at most 16); ``progress`` shows bars on
    stderr. Problems are reported, never raised. A source without an annotation file
    (``images:DIR``) is an image folder: its files are checked.
    """
    if isinstance(source, DatasetSource):
        annotation_file, image_dir = source.annotation_file, source.image_dir
    else:
        annotation_file, image_dir = (Path(p) for p in source)
    report = CheckReport(annotation_file and Path(annotation_file), Path(image_dir))
    workers = workers or min(16, os.cpu_count() or 1)
    if report.annotation_file is None:
        with progress_bar(disable=not progress, stderr=True) as bar:
            _check_folder(report, decode_images, workers, bar)
        return report
    data = _load_json(report.annotation_file, report)
    if data is None:
        return report
    categories = _check_categories(data["categories"], report)
    images = _check_images(data["images"], report)
    with progress_bar(disable=not progress, stderr=True) as bar:
        _check_files(images, report.image_dir, report, decode_images, workers, bar)
        _check_annotations(data["annotations"], images, categories, report, bar)
    return report
