"""Two layer probes on the same annotation file compared layer by layer, with paired
bootstrap 95% intervals over images.

Per layer and task (box, mask) the AP of probe A and probe B and ``delta = B - A``; per
layer also the detection-segmentation gap (``AP mask - AP box``) of each and its
difference. Each bootstrap replicate draws the images with replacement once and scores
all four result files (A and B, box and mask) on that same draw, so the intervals of the
deltas and of the gap difference are paired; the interval is the 2.5 and 97.5 percentiles
of the replicates.

hotcoco's ``compare`` bootstraps over images too, but it pairs two evaluations only and
returns the interval, not the replicates, so the gap difference (four evaluations on one
draw) cannot be built from it. This module therefore matches each result file once with
hotcoco (``COCOeval.evaluate``, per image and category) and then scores every replicate
by re-accumulating those matches with the image multiplicities as weights, all replicates
at once in numpy (:func:`weighted_ap`). With every weight 1 this is COCO's AP exactly; for
a replicate it is the AP of the resampled image set, up to the order of detections of
different images with exactly the same score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dimaskdino.analysis.probe import TASKS, detection_files
from dimaskdino.analysis.probe_history import HISTORY_JSON, read_learning_speed
from dimaskdino.data.coco import DatasetError
from dimaskdino.engine.evaluator import hotcoco_evaluation, hotcoco_ground_truth

COLUMNS = ["layer", "task", "ap_a", "ap_b", "delta", "ci_low", "ci_high"]
DEFAULT_BOOTSTRAP = 200
RECALLS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds
CHUNK = 2_000_000  # replicate x threshold x detection cells scored at once


@dataclass
class CategoryMatches:
    """One category's detections over all images, in COCO's accumulation order (score
    descending, stable): ``image (D,)`` image index, ``tp``/``fp`` ``(T, D)`` per IoU
    threshold (ignored detections are neither); ``objects (I,)`` non-ignored ground truth
    per image."""

    image: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    objects: np.ndarray


def matches(evaluator) -> list[CategoryMatches]:
    """The per-category matches of an evaluated hotcoco COCOeval, area range ``all`` and
    the largest detection count (what COCO's AP reads)."""
    params = evaluator.params
    images = {image: i for i, image in enumerate(params.img_ids)}
    everything, thresholds = list(params.area_rng[0]), len(params.iou_thrs)
    per_category: dict[int, list[dict]] = {c: [] for c in params.cat_ids}
    for entry in evaluator.eval_imgs:
        if entry is not None and list(entry["aRng"]) == everything:
            per_category[entry["category_id"]].append(entry)
    found = []
    for entries in per_category.values():
        objects = np.zeros(len(images))
        for e in entries:
            objects[images[e["image_id"]]] = len(e["gtIgnore"]) - sum(e["gtIgnore"])
        scores = np.concatenate([np.asarray(e["dtScores"], float) for e in entries] or [[]])
        image = np.concatenate([np.full(len(e["dtScores"]), images[e["image_id"]])
                                for e in entries] or [[]]).astype(int)
        matched = np.concatenate([np.asarray(e["dtMatches"]).reshape(thresholds, -1) != 0
                                  for e in entries] or [np.zeros((thresholds, 0), bool)], 1)
        ignored = np.concatenate([np.asarray(e["dtIgnore"], bool).reshape(thresholds, -1)
                                  for e in entries] or [np.zeros((thresholds, 0), bool)], 1)
        order = np.argsort(-scores, kind="mergesort")
        found.append(CategoryMatches(image[order], (matched & ~ignored)[:, order],
                                     (~matched & ~ignored)[:, order], objects))
    return found


def _category_ap(category: CategoryMatches, weights: np.ndarray) -> np.ndarray:
    """AP (fraction, averaged over IoU thresholds) of one category for each row of
    ``weights (B, I)``; NaN where the replicate holds none of its objects."""
    count = weights @ category.objects
    thresholds, detections = category.tp.shape
    out = np.full(len(weights), np.nan)
    if detections == 0:
        out[count > 0] = 0.0
        return out
    rows = max(1, CHUNK // (thresholds * detections))
    for start in range(0, len(weights), rows):
        w = weights[start:start + rows][:, category.image][:, None, :]   # (b, 1, D)
        tp = np.cumsum(w * category.tp, axis=-1)                         # (b, T, D)
        fp = np.cumsum(w * category.fp, axis=-1)
        n = count[start:start + rows, None, None]
        recall = tp / np.where(n > 0, n, 1)
        precision = tp / (tp + fp + np.spacing(1))
        envelope = np.maximum.accumulate(precision[..., ::-1], axis=-1)[..., ::-1]
        # COCO's search of each recall threshold in every (replicate, IoU) row at once:
        # rows are shifted apart (recall <= 1) so one sorted search covers them all
        flat_rows = recall.shape[0] * thresholds
        shift = 2.0 * np.arange(flat_rows)[:, None]
        at = np.searchsorted((recall.reshape(flat_rows, -1) + shift).ravel(),
                             (RECALLS[None, :] + shift).ravel(), side="left")
        local = at.reshape(flat_rows, -1) - detections * np.arange(flat_rows)[:, None]
        inside = local < detections
        values = np.where(inside, envelope.reshape(-1)[np.minimum(
            at.reshape(flat_rows, -1), envelope.size - 1)], 0.0)
        ap = values.reshape(recall.shape[0], thresholds, -1).mean(axis=(1, 2))
        out[start:start + rows] = np.where(count[start:start + rows] > 0, ap, np.nan)
    return out


def weighted_ap(found: list[CategoryMatches], weights: np.ndarray) -> np.ndarray:
    """COCO AP (x 100) for each row of ``weights (B, I)`` (image multiplicities): the mean
    over the categories with objects in that replicate (0 where none has)."""
    per_category = np.stack([_category_ap(c, weights) for c in found])
    present = ~np.isnan(per_category)
    total = np.where(present, per_category, 0.0).sum(axis=0)
    return 100 * total / np.maximum(present.sum(axis=0), 1)


def bootstrap_weights(images: int, replicates: int, seed: int = 0) -> np.ndarray:
    """``(replicates, images)`` multiplicities of ``images`` drawn with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, images, size=(replicates, images))
    weights = np.zeros((replicates, images))
    np.add.at(weights, (np.arange(replicates)[:, None], draws), 1.0)
    return weights


@dataclass
class ProbeFolder:
    """A probe's output folder: its ``info`` (probe.json) and probed ``layers``."""

    path: Path
    info: dict
    layers: list[int]

    @classmethod
    def read(cls, path: Path) -> ProbeFolder:
        """DatasetError unless ``path`` holds a probe of an annotated dataset with its
        detection files."""
        file = path / "probe.json"
        if not file.is_file():
            raise DatasetError(f"{path} is not a layer-probe folder (no probe.json)")
        info = json.loads(file.read_text())
        if not info.get("annotation_file"):
            raise DatasetError(f"{path} probed images without annotations; compare needs AP")
        layers = sorted({row["layer"] for row in info["table"]})
        missing = [str(p) for layer in layers for p in detection_files(path, layer).values()
                   if not p.is_file()]
        if missing:
            raise DatasetError(f"{path}: detection file missing: {missing[0]}")
        return cls(path, info, layers)

    def learning_speed(self) -> dict | None:
        """The learning-speed measures of the probed run (``probe_history.json`` in this
        folder, written by ``--checkpoints all``, else beside the probed checkpoint, written
        by training with ``solver.probe_period``); None when there is none."""
        checkpoint = self.info.get("checkpoint")
        for folder in (self.path, *([Path(checkpoint).parent] if checkpoint else [])):
            if (found := read_learning_speed(folder / HISTORY_JSON)) is not None:
                return found
        return None

    def results(self, layer: int, iou: str) -> list[dict]:
        """The exported COCO results of ``layer`` for ``iou`` (bbox / segm)."""
        return json.loads(detection_files(self.path, layer)[iou].read_text())


def check_comparable(a: ProbeFolder, b: ProbeFolder) -> None:
    """DatasetError unless ``a`` and ``b`` probed the same annotation file and layers."""
    files = [Path(p.info["annotation_file"]).resolve() for p in (a, b)]
    if files[0] != files[1]:
        raise DatasetError(f"the probes scored different annotation files ({files[0]} and "
                           f"{files[1]}); compare needs the same one")
    if a.layers != b.layers:
        raise DatasetError(f"the probes hold different layers ({a.layers} and {b.layers})")


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def compare_probes(a: ProbeFolder, b: ProbeFolder, replicates: int = DEFAULT_BOOTSTRAP,
                   seed: int = 0) -> pd.DataFrame:
    """The comparison table (:data:`COLUMNS`): per layer the rows ``box``, ``mask`` and
    ``gap`` (AP mask - AP box), ``delta = ap_b - ap_a`` and its paired bootstrap 95%
    interval (``replicates`` draws of the images)."""
    check_comparable(a, b)
    ground_truth = json.loads(Path(a.info["annotation_file"]).read_text())
    reference = hotcoco_ground_truth(ground_truth)
    weights = np.vstack([np.ones(len(ground_truth["images"])),
                         bootstrap_weights(len(ground_truth["images"]), replicates, seed)])
    rows = []
    for layer in a.layers:
        scores = {}
        for iou, task in TASKS.items():
            for name, probe in (("a", a), ("b", b)):
                found = probe.results(layer, iou)
                scores[(task, name)] = (weighted_ap(matches(hotcoco_evaluation(
                    reference, found, iou)), weights) if found else np.zeros(len(weights)))
        for name in ("a", "b"):
            scores[("gap", name)] = scores[("mask", name)] - scores[("box", name)]
        for task in ("box", "mask", "gap"):
            ap_a, ap_b = scores[(task, "a")], scores[(task, "b")]
            delta = ap_b - ap_a
            rows.append({"layer": layer, "task": task, "ap_a": float(ap_a[0]),
                         "ap_b": float(ap_b[0]), "delta": float(ap_b[0]) - float(ap_a[0]),
                         **dict(zip(("ci_low", "ci_high"), _interval(delta[1:])))})
    return pd.DataFrame(rows, columns=COLUMNS)


SPEED_MEASURES = ("iteration_50", "iteration_90", "auc")
SPEED_COLUMNS = ["layer", "task", "measure", "a", "b", "delta"]


def compare_speeds(a: dict, b: dict) -> pd.DataFrame:
    """Learning-speed measures of two histories side by side (:data:`SPEED_COLUMNS`): per
    (layer, task) both have, each of :data:`SPEED_MEASURES` and ``delta = b - a`` (NaN
    where either never reached it); last, the first layer's row of task ``gap``, measure
    ``first_layer_gap_50``."""
    curves = [{(c["layer"], c["task"]): c for c in side["curves"]} for side in (a, b)]
    rows = []
    for key in sorted(curves[0].keys() & curves[1].keys()):
        for measure in SPEED_MEASURES:
            values = [np.nan if c[key][measure] is None else c[key][measure] for c in curves]
            rows.append({"layer": key[0], "task": key[1], "measure": measure,
                         "a": values[0], "b": values[1], "delta": values[1] - values[0]})
    gaps = [np.nan if s["first_layer_gap_50"] is None else s["first_layer_gap_50"]
            for s in (a, b)]
    rows.append({"layer": a["first_layer"], "task": "gap", "measure": "first_layer_gap_50",
                 "a": gaps[0], "b": gaps[1], "delta": gaps[1] - gaps[0]})
    return pd.DataFrame(rows, columns=SPEED_COLUMNS)
