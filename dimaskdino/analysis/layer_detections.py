"""What a picture of the imbalance shows (paper Fig. 1a/b): per decoder layer, the kept
detections of one image, each with its box, its mask and the tight box of that mask.

Every layer is post-processed like the last one, as the layer probe does it (top
(query, class) pairs, masks resized to the output size, score = class x mask confidence),
then detections scoring below a threshold are dropped. The image, its ground truth and the
detections are at a bounded drawing resolution (the longer side at most ``max_side``): the
model reports its instances at that size, so a large image costs no full-size masks. The
box-mask IoU is :mod:`~dimaskdino.analysis.consistency`'s, measured at that resolution
(for images within the bound, exactly what the probe's result files give).

How it is drawn is :mod:`dimaskdino.reports.drawing`; nothing here plots.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from dimaskdino.analysis.consistency import box_mask_iou
from dimaskdino.analysis.layers import layer_instances
from dimaskdino.config import ConfigError
from dimaskdino.data.loader import EvaluationImages
from dimaskdino.data.transforms import resize
from dimaskdino.engine.evaluator import encode_masks
from dimaskdino.engine.inference import predict
from dimaskdino.engine.precision import Precision, announced, model_precision
from dimaskdino.fileio import atomic_write
from dimaskdino.modeling.model import DIMaskDINO

MAX_SIDE = 1024            # the longest side an image is drawn at
GALLERY_IMAGES = 3         # the report's gallery: this many val images ...
GALLERY_SCORE = 0.3        # ... with the detections scoring at least this
GALLERY_MAX_SIDE = 384     # ... drawn at most this large (small artifacts)
GALLERY_RULE = (f"the {GALLERY_IMAGES} validation images with the most ground-truth objects "
                "(crowd regions not counted; ties: the smaller image id)")


@dataclass
class Detections:
    """Objects of one image at the drawing resolution: ``boxes (n, 4)`` xyxy pixels,
    ``masks (n, H, W)`` bool, ``labels (n,)`` contiguous class ids and ``scores (n,)``
    (NaN for ground truth)."""

    boxes: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def _results(self) -> list[dict]:
        """COCO result dicts (``bbox`` xywh, RLE ``segmentation``) of the detections."""
        rles = encode_masks(torch.from_numpy(self.masks))
        xywh = np.concatenate([self.boxes[:, :2], self.boxes[:, 2:] - self.boxes[:, :2]], 1)
        return [{"bbox": box, "segmentation": rle} for box, rle in zip(xywh.tolist(), rles)]

    def tight_boxes(self) -> np.ndarray:
        """The tight box of each mask, xyxy ``(n, 4)`` in pycocotools' ``toBbox`` convention
        (a pixel covers ``[c, c + 1)``); all zeros for an empty mask."""
        if not len(self):
            return np.zeros((0, 4))
        xywh = mask_utils.toBbox([r["segmentation"] for r in self._results()])
        return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)

    def mean_box_mask_iou(self) -> float:
        """Mean IoU of each box with its mask's tight box (non-empty masks); NaN if none."""
        ious = box_mask_iou(self._results())
        return float(ious.mean()) if ious.size else float("nan")


@dataclass
class ImageView:
    """One image as drawn: ``name`` (file stem), ``image (H, W, 3)`` uint8 RGB at the drawing
    resolution, ``layers`` {layer: kept detections}, ``last`` (the model's final layer),
    ``ground_truth`` (None without annotations or when hidden), ``class_names``."""

    name: str
    image: np.ndarray
    layers: dict[int, Detections]
    last: int
    ground_truth: Detections | None
    class_names: list[str]


def resolve_layers(text: str, last: int) -> list[int]:
    """``"0,last"`` -> ``[0, last]`` for a model whose final layer is ``last``; ConfigError
    for a malformed list or a layer the model does not have."""
    layers = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part == "last":
            layers.append(last)
        elif part.isdigit() and int(part) <= last:
            layers.append(int(part))
        else:
            raise ConfigError(f"--layers: no layer {part!r}; this model has layers 0..{last} "
                              f"(0 = the decoder's input queries, {last} or 'last' = final)")
    if not layers:
        raise ConfigError("--layers names no layer; e.g. 0,last")
    return list(dict.fromkeys(layers))


def drawing_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """``(H, W)`` scaled down (never up) so that the longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def class_names(dataset: EvaluationImages, count: int) -> list[str]:
    """The dataset's category names when it has them, else ``class k``."""
    names = getattr(dataset.dataset, "class_names", None)
    return list(names) if names and len(names) == count else [f"class {k}" for k in
                                                             range(count)]


def most_annotated(dataset: EvaluationImages, count: int = GALLERY_IMAGES) -> list[int]:
    """The gallery's rule (:data:`GALLERY_RULE`): indices of the ``count`` images with the most
    non-crowd annotations, ties broken by the smaller image id."""
    images = dataset.dataset.images
    objects = {im["id"]: 0 for im in images}
    for ann in dataset.dataset.data["annotations"]:
        if not ann.get("iscrowd", 0) and ann["image_id"] in objects:
            objects[ann["image_id"]] += 1
    order = sorted(range(len(images)), key=lambda i: (-objects[images[i]["id"]],
                                                      images[i]["id"]))
    return order[:count]


def _kept(instances: dict, score_threshold: float) -> Detections:
    keep = torch.nonzero(instances["scores"] >= score_threshold).flatten()
    keep = keep[instances["scores"][keep].argsort(descending=True)]
    return Detections(instances["pred_boxes"][keep].double().cpu().numpy(),
                      instances["pred_masks"][keep].cpu().numpy(),
                      instances["pred_classes"][keep].cpu().numpy(),
                      instances["scores"][keep].double().cpu().numpy())


def image_views(model: DIMaskDINO, dataset: EvaluationImages, indices: Sequence[int],
                layers: Sequence[int], score_threshold: float,
                precision: str | Precision = "auto", ground_truth: bool = True,
                max_side: int = MAX_SIDE, announce: Callable[[str], None] | None = None
                ) -> Iterator[ImageView]:
    """The :class:`ImageView` of each of ``indices`` of ``dataset``: ``layers`` (valid layer
    numbers), detections scoring at least ``score_threshold``; ground truth when the dataset
    has annotations and ``ground_truth``. The model is made float32 (in place) and predicts
    in ``precision`` (see :mod:`dimaskdino.engine.precision`); ``announce`` gets the
    precision's one-line description once the first image is read."""
    model.float().eval()
    mode = model_precision(precision, model)
    device = next(model.parameters()).device
    last = model.config.predictor.dec_layers
    names = class_names(dataset, model.config.predictor.num_classes)
    annotated = ground_truth and getattr(dataset.dataset, "has_annotations", False)
    samples = ((index, *dataset.dataset[index]) for index in indices)
    for index, original, target in announced(samples, mode, announce):
        model_input, _ = dataset.for_testing(original, target)
        size = drawing_size(*original.shape[-2:], max_side)
        pred = predict(model, [model_input.to(device)], [size], all_layers=True,
                       precision=mode)
        by_layer = layer_instances(pred, layers, model.config.detections_per_image)[0]
        keep = ~target["iscrowd"]
        image, masks = resize(original, target["masks"][keep], size)
        truth = None
        if annotated:
            scale = np.array([size[1] / original.shape[-1], size[0] / original.shape[-2]] * 2)
            truth = Detections(target["boxes"][keep].double().numpy() * scale, masks.numpy(),
                               target["labels"][keep].numpy(), np.full(int(keep.sum()), np.nan))
        name = Path(dataset.dataset.images[index]["file_name"]).stem
        yield ImageView(name, image.permute(1, 2, 0).numpy(),
                        {layer: _kept(by_layer[layer], score_threshold) for layer in layers},
                        last, truth, names)


def gallery_views(model: DIMaskDINO, dataset: EvaluationImages,
                  precision: str = "auto") -> list[ImageView]:
    """The report's gallery of one trained cell: first and last layer of the images of
    :func:`most_annotated`, at scores >= :data:`GALLERY_SCORE`, predicted in ``precision``."""
    last = model.config.predictor.dec_layers
    return list(image_views(model, dataset, most_annotated(dataset), [0, last], GALLERY_SCORE,
                            precision, max_side=GALLERY_MAX_SIDE))


FIELDS = ("boxes", "masks", "labels", "scores")


def _arrays(prefix: str, detections: Detections) -> dict[str, np.ndarray]:
    return {f"{prefix}{key}": getattr(detections, key) for key in FIELDS}


def _detections(arrays: dict[str, np.ndarray], prefix: str) -> Detections:
    return Detections(*(arrays[f"{prefix}{key}"] for key in FIELDS))


def save_views(views: Sequence[ImageView], folder: Path) -> list[Path]:
    """One ``folder/<position>-<name>.npz`` per view (atomically); returns the paths."""
    paths = []
    for position, view in enumerate(views):
        arrays = {"image": view.image, "last": np.array(view.last),
                  "class_names": np.array(view.class_names, dtype=str),
                  "layers": np.array(sorted(view.layers))}
        for layer, detections in view.layers.items():
            arrays.update(_arrays(f"layer{layer}_", detections))
        if view.ground_truth is not None:
            arrays.update(_arrays("gt_", view.ground_truth))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        paths.append(folder / f"{position:02d}-{view.name}.npz")
        atomic_write(paths[-1], buffer.getvalue())
    return paths


def load_views(folder: Path) -> list[ImageView]:
    """The views :func:`save_views` wrote into ``folder``, in their order."""
    views = []
    for path in sorted(folder.glob("*.npz")):
        with np.load(path, allow_pickle=False) as npz:
            data = dict(npz)
        views.append(ImageView(
            path.stem.partition("-")[2], data["image"],
            {int(layer): _detections(data, f"layer{layer}_") for layer in data["layers"]},
            int(data["last"]), _detections(data, "gt_") if "gt_boxes" in data else None,
            [str(name) for name in data["class_names"]]))
    return views
