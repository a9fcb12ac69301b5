"""COCO evaluation of detections and instance masks (AP x 100, as the paper reports).

hotcoco (Rust) is the default backend: it scores like pycocotools and adds TIDE's error
decomposition (:func:`tide_errors`); faster-coco-eval (C++) and pycocotools stay
selectable, and pycocotools is the reference the tests hold the others to.
"""

from __future__ import annotations

import contextlib
import io
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from dimaskdino.data.coco import DatasetError
from dimaskdino.ops.masks import encode_bitmaps

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
Backend = Literal["hotcoco", "faster", "pycocotools"]
BACKEND_HELP = "hotcoco | faster | pycocotools"
# TIDE's thresholds (Bolya et al. 2020): a match at IoU >= 0.5; a detection overlapping no
# object by IoU >= 0.1 is background
TIDE_POS_IOU, TIDE_BACKGROUND_IOU = 0.5, 0.1
TIDE_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FP", "FN")


def check_backend(backend: str) -> None:
    """ConfigError unless ``backend`` is an evaluation backend (before any work is done)."""
    from dimaskdino.config import ConfigError

    if backend not in typing.get_args(Backend):
        raise ConfigError(f"unknown backend {backend!r}; choose "
                          f"{BACKEND_HELP.replace(' |', ',')}")


def encode_masks(masks: torch.Tensor) -> list[dict]:
    """RLE-encode bool masks ``(N, H, W)`` in one call (COCO's column-major layout)."""
    return encode_bitmaps(masks.detach().cpu().numpy())


def _encoded_pairs(instances: dict[str, torch.Tensor]) -> list[dict]:
    """The RLE of each pair's mask: ``mask_rles`` as given, or ``pred_masks`` encoded.
    Pairs of one query (``query_index``, when present) share its mask
    (:func:`~dimaskdino.modeling.postprocess.stacked_instance_inference` makes them so): each
    distinct mask is encoded once and its RLE dict shared by its pairs (found in Python and
    numpy: a few dozen pairs, where small parallel torch ops cost more)."""
    if "mask_rles" in instances:
        return instances["mask_rles"]
    masks = instances["pred_masks"].detach().cpu().numpy()
    if "query_index" not in instances:
        return encode_bitmaps(masks)
    queries = instances["query_index"].tolist()
    first: dict[int, int] = {}  # query -> its first pair, in order of appearance
    for pair, query in enumerate(queries):
        first.setdefault(query, pair)
    rles = dict(zip(first, encode_bitmaps(masks[list(first.values())]), strict=True))
    return [rles[query] for query in queries]


@dataclass
class CocoResults:
    """COCO results of many detections, as columns: ``image_ids``, ``category_ids`` (dataset
    ids), ``boxes (n, 4)`` float64 ``[x, y, w, h]`` pixels, ``scores``; with masks,
    ``segmentations`` (n RLE dicts; a query's pairs share one: read it, do not edit it) and
    ``mask_boxes (n, 4)``, each mask's tight ``[x, y, w, h]`` where the instances had them.

    hotcoco reads the columns as they are (no dict per detection); :meth:`to_dicts` gives
    the result dicts of COCO's result files and the other backends.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    segmentations: list[dict] | None = None
    mask_boxes: np.ndarray | None = None

    @classmethod
    def from_instances(cls, instances: dict[str, torch.Tensor], image_id: int,
                       category_ids: Sequence[int], masks: bool = True) -> CocoResults:
        """Results of one image's instances: ``scores (n,)``, ``pred_classes (n,)``
        contiguous ids, ``pred_boxes (n, 4)`` xyxy pixels and, for ``masks``,
        ``pred_masks (n, H, W)`` bool or ``mask_rles`` (n RLE dicts) with ``mask_boxes``;
        pairs with the same ``query_index`` (optional) must have the same mask: their
        results share one RLE dict. ``category_ids``: the dataset id of each contiguous
        class id."""
        boxes = instances["pred_boxes"].detach().cpu().double().numpy()
        labels = instances["pred_classes"].cpu().numpy()
        mask_boxes = instances.get("mask_boxes") if masks else None
        return cls(image_ids=np.full(len(labels), image_id, dtype=np.int64),
                   category_ids=np.asarray(category_ids, dtype=np.int64)[labels],
                   boxes=np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), axis=1),
                   scores=instances["scores"].detach().cpu().double().numpy(),
                   segmentations=_encoded_pairs(instances) if masks else None,
                   mask_boxes=None if mask_boxes is None else mask_boxes.numpy())

    @classmethod
    def concat(cls, parts: Sequence[CocoResults]) -> CocoResults:
        """One table of ``parts`` in order (an empty one, without masks, for no parts)."""
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)),
                       np.zeros(0))
        def joined(name: str):
            values = [getattr(part, name) for part in parts]
            return None if any(v is None for v in values) else np.concatenate(values)
        segmentations = None if any(p.segmentations is None for p in parts) else [
            rle for part in parts for rle in part.segmentations]
        return cls(joined("image_ids"), joined("category_ids"), joined("boxes"),
                   joined("scores"), segmentations, joined("mask_boxes"))

    def __len__(self) -> int:
        return len(self.scores)

    def with_mask_boxes(self) -> CocoResults:
        """The same detections and scores with each box replaced by its mask's tight box
        (``mask_boxes``, else pycocotools' ``toBbox`` of the masks; an empty mask's is
        ``[0, 0, 0, 0]``), without masks: what a box evaluation of the masks' boxes reads."""
        tight = self.mask_boxes
        if tight is None:
            from pycocotools import mask as mask_utils

            tight = mask_utils.toBbox(self.segmentations) if len(self) else np.zeros((0, 4))
        return CocoResults(self.image_ids, self.category_ids,
                           np.asarray(tight, dtype=np.float64).reshape(-1, 4), self.scores)

    def to_dicts(self, masks: bool = True) -> list[dict]:
        """COCO result dicts (``image_id``, ``category_id``, ``bbox``, ``score`` and, with
        ``masks`` and masks, ``segmentation``)."""
        rles = self.segmentations if masks and self.segmentations is not None else None
        results = [{"image_id": image, "category_id": category, "bbox": box, "score": score}
                   for image, category, box, score in zip(
                       self.image_ids.tolist(), self.category_ids.tolist(),
                       self.boxes.tolist(), self.scores.tolist(), strict=True)]
        if rles is not None:
            for result, rle in zip(results, rles, strict=True):
                result["segmentation"] = rle
        return results

    def array(self) -> np.ndarray:
        """``(n, 7)`` float64 rows ``[image_id, x, y, w, h, score, category_id]`` (the
        numpy results of pycocotools' ``loadNumpyAnnotations``)."""
        return np.column_stack((self.image_ids, self.boxes, self.scores, self.category_ids)
                               ).astype(np.float64)


Results = list[dict] | CocoResults


def _copies(entries: list[dict]) -> list[dict]:
    """Copies of COCO entries, RLE segmentation dicts included (polygons are only read)."""
    return [{**e, "segmentation": dict(e["segmentation"])}
            if isinstance(e.get("segmentation"), dict) else dict(e) for e in entries]


def _prepared(results: list[dict], iou_type: str) -> list[dict]:
    """Copies of ``results``; a box evaluation must not read segmentations."""
    results = _copies(results)
    if iou_type == "bbox":
        for r in results:
            r.pop("segmentation", None)
    return results


def hotcoco_ground_truth(ground_truth: dict):
    """A hotcoco ``COCO`` of a COCO-format dataset dict (built once, scored many times;
    hotcoco copies what it reads, the dict is left as it was)."""
    import hotcoco

    return hotcoco.COCO(ground_truth)


def hotcoco_evaluation(ground_truth, results: Results, iou_type: Literal["bbox", "segm"]):
    """A hotcoco ``COCOeval`` of ``results`` on ``ground_truth`` (a
    :func:`hotcoco_ground_truth`), ``evaluate()`` done: per-image matches, ready for
    :func:`summary` and :func:`tide_errors`."""
    import hotcoco

    # a box evaluation must not read segmentations; no copies otherwise: hotcoco reads the
    # entries into its own, leaving them as they were. Array rows have a box, so their
    # areas are the boxes', as for result dicts with a bbox.
    if isinstance(results, CocoResults):
        masks = results.segmentations if iou_type == "segm" else None
        detections = ground_truth.load_res(results.array(), segmentation=masks)
    else:
        if iou_type == "bbox":
            results = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
        detections = ground_truth.load_res(results)
    evaluator = hotcoco.COCOeval(ground_truth, detections, iou_type)
    evaluator.evaluate()
    return evaluator


def summary(evaluator) -> dict[str, float]:
    """:data:`METRICS` (x 100) of an evaluated COCOeval (any backend); its printed summary
    is silenced."""
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) * 100 for name, value in zip(METRICS, evaluator.stats[:6])}


def tide_errors(evaluator) -> dict[str, float]:
    """TIDE's delta AP (x 100) per error type of :data:`TIDE_ERRORS` of an evaluated hotcoco
    COCOeval: how much AP at IoU :data:`TIDE_POS_IOU` would rise if that error were fixed
    (background below IoU :data:`TIDE_BACKGROUND_IOU`)."""
    found = evaluator.tide_errors(pos_thr=TIDE_POS_IOU, bg_thr=TIDE_BACKGROUND_IOU)["delta_ap"]
    return {error: float(found[error]) * 100 for error in TIDE_ERRORS}


def coco_evaluate(ground_truth: dict, results: Results, iou_type: Literal["bbox", "segm"],
                  backend: Backend = "hotcoco") -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl (x 100) of ``results`` on a COCO-format dataset dict.

    No results gives zeros; the backends' printed summaries are silenced.
    """
    if not len(results):
        return dict.fromkeys(METRICS, 0.0)
    if backend == "hotcoco":
        return summary(hotcoco_evaluation(hotcoco_ground_truth(ground_truth), results,
                                          iou_type))
    if isinstance(results, CocoResults):
        results = results.to_dicts(masks=iou_type == "segm")
    # the other evaluators set keys on the entries they read (areas, converted masks): they
    # get copies of the entries, which is enough since they replace values instead of
    # editing them
    ground_truth = {**ground_truth, "images": _copies(ground_truth["images"]),
                    "annotations": _copies(ground_truth["annotations"])}
    results = _prepared(results, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "faster":
            from faster_coco_eval import COCO, COCOeval_faster

            gt = COCO(ground_truth)
            evaluator = COCOeval_faster(gt, gt.loadRes(results), iou_type)
        elif backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            gt = COCO()
            gt.dataset = ground_truth
            gt.createIndex()
            evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        else:
            raise ValueError(f"unknown evaluation backend {backend!r}")
        evaluator.evaluate()
    return summary(evaluator)


def check_categories(model, dataset) -> None:
    """``model`` (a :class:`DIMaskDINO`) and ``dataset`` (an :class:`EvaluationImages`) must
    agree: the model's classes must be the dataset's categories (contiguous ids, JSON order)."""
    classes, categories = model.config.predictor.num_classes, len(dataset.dataset.category_ids)
    if classes != categories:
        raise DatasetError(f"the model predicts {classes} classes but "
                           f"{dataset.dataset.annotation_file} has {categories} categories")


def evaluate_model(model, dataset, batch_size: int = 1, backend: Backend = "hotcoco",
                   workers: int = 0, progress: bool = True, precision="fp32",
                   announce=None) -> dict[str, dict[str, float]]:
    """Box and mask AP of ``model``'s final predictions on ``dataset`` (an
    :class:`~dimaskdino.data.loader.EvaluationImages`): ``{"bbox": {...}, "segm": {...}}``,
    predicted in ``precision`` (see :func:`~dimaskdino.engine.inference.predictions`, which
    also says what ``announce`` gets).

    Under DDP the images are shared out, results gathered, and every process gets the
    metrics.
    """
    from dimaskdino.engine import distributed
    from dimaskdino.engine.inference import predictions

    check_categories(model, dataset)
    coco = dataset.dataset
    parts: list[CocoResults] = []
    for targets, prediction in predictions(model, dataset, batch_size, workers=workers,
                                           progress=progress, description="evaluate",
                                           precision=precision, announce=announce,
                                           masks="rle"):
        parts += [CocoResults.from_instances(instances, target["image_id"], coco.category_ids)
                  for target, instances in zip(targets, prediction.instances, strict=True)]
    results = CocoResults.concat(distributed.gather_lists(parts))
    return {iou: coco_evaluate(coco.data, results, iou, backend) for iou in ("bbox", "segm")}
