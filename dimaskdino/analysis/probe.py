"""The layer probe: AP_box and AP_mask of every decoder layer from one forward pass.

Layer 0 is the prediction from the decoder's input queries, layer ``l`` that of decoder
layer ``l``; the last layer is the model's output. One forward pass per batch keeps every
layer's logits, boxes and masks; each layer is post-processed exactly like the last one
(:func:`~dimaskdino.modeling.postprocess.instance_inference`: top (query, class) pairs,
masks resized to the original image, scores = class x mask confidence) and evaluated with
COCO's definitions. For DI-MaskDINO the probe also scores the boxes of DI's token-
interaction stages (``ti1``, ``ti2``, ...; class and box only, so box AP only).

Imbalance measures (paper §1, Fig. 1): per layer ``gap = AP_mask - AP_box``; the gap at the
first and the last layer; its change from first to last (negative = the detection lag
shrinks through the decoder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from dimaskdino.data.coco import DatasetError
from dimaskdino.data.loader import EvaluationImages
from dimaskdino.engine import distributed
from dimaskdino.engine.evaluator import (
    METRICS,
    Backend,
    check_categories,
    coco_evaluate,
    instances_to_results,
)
from dimaskdino.engine.inference import predictions
from dimaskdino.fileio import atomic_write_text
from dimaskdino.modeling.model import DIMaskDINO
from dimaskdino.modeling.postprocess import box_inference, stacked_instance_inference

COLUMNS = ["model", "layer", "task", *METRICS]
TASKS = {"bbox": "box", "segm": "mask"}


@dataclass
class ProbeResult:
    """``table``: one row per (layer, task) with :data:`COLUMNS`; ``stages``: DI's
    token-interaction stages (columns model, stage, task, AP...; empty without DI);
    ``imbalance``: see :func:`imbalance_measures`; ``results``: each layer's COCO result
    dicts, masks included (``results[layer]``; box scoring ignores the masks)."""

    table: pd.DataFrame
    stages: pd.DataFrame
    imbalance: dict
    results: dict[int, list[dict]] = field(repr=False, default_factory=dict)


def imbalance_measures(table: pd.DataFrame) -> dict:
    """Per-layer ``AP_mask - AP_box`` and its first / last values and change."""
    wide = table.pivot(index="layer", columns="task", values="AP").sort_index()
    gaps = (wide["mask"] - wide["box"]).round(6)
    first, last = int(gaps.index[0]), int(gaps.index[-1])
    return {"gap_per_layer": {int(k): float(v) for k, v in gaps.items()},
            "first_layer": first, "last_layer": last,
            "first_layer_gap": float(gaps[first]), "last_layer_gap": float(gaps[last]),
            "gap_change": float(gaps[last] - gaps[first])}


def _check_masks(dataset: EvaluationImages) -> None:
    missing = sum("segmentation" not in a for a in dataset.dataset.data["annotations"])
    if missing:
        raise DatasetError(f"{dataset.dataset.annotation_file}: {missing} annotations have no "
                           "segmentation; the layer probe evaluates masks and needs them")


def probe_layers(model: DIMaskDINO, dataset: EvaluationImages, layers: list[int] | None = None,
                 batch_size: int = 1, backend: Backend = "faster", progress: bool = True,
                 workers: int = 0) -> ProbeResult:
    """Probe ``layers`` (default: all, 0..L) of ``model`` on ``dataset``."""
    check_categories(model, dataset)
    _check_masks(dataset)
    last = model.config.predictor.dec_layers
    layers = list(range(last + 1)) if layers is None else sorted(set(layers))
    if any(not 0 <= layer <= last for layer in layers):
        raise ValueError(f"layers must lie in 0..{last} for a model with {last} decoder layers")
    category_ids = dataset.dataset.category_ids
    topk = model.config.detections_per_image
    results: dict[int, list] = {layer: [] for layer in layers}
    stage_results: dict[str, list] = {}
    inner = [layer for layer in layers if layer != last]
    for targets, pred in predictions(model, dataset, batch_size, all_layers=True,
                                     workers=workers, progress=progress, description="probe"):
        for i, target in enumerate(targets):
            sizes = (pred.padded_size, pred.image_sizes[i], pred.output_sizes[i])
            found = dict(zip(inner, stacked_instance_inference(
                *(torch.stack([pred.layers[layer][key][i] for layer in inner])
                  for key in ("pred_logits", "pred_masks", "pred_boxes")), *sizes, topk)
                if inner else []))
            # the last layer is the model's own output: the same as ``dimask eval``
            found[last] = pred.instances[i]
            for layer in layers:
                results[layer].extend(instances_to_results(found[layer], target["image_id"],
                                                           category_ids))
            for index, stage in enumerate(pred.outputs.get("di", {}).get("aux", [])):
                boxes = box_inference(stage["pred_logits"][i], stage["pred_boxes"][i], *sizes,
                                      topk)
                stage_results.setdefault(f"ti{index + 1}", []).extend(
                    instances_to_results(boxes, target["image_id"], category_ids, masks=False))
    ground_truth = dataset.dataset.data
    name = model.config.name
    rows = []
    for layer in layers:
        results[layer] = distributed.gather_lists(results[layer])
        for iou, task in TASKS.items():
            metrics = coco_evaluate(ground_truth, results[layer], iou, backend)
            rows.append({"model": name, "layer": layer, "task": task, **metrics})
    stage_rows = [{"model": name, "stage": stage, "task": "box",
                   **coco_evaluate(ground_truth, distributed.gather_lists(found), "bbox",
                                   backend)}
                  for stage, found in stage_results.items()]
    table = pd.DataFrame(rows, columns=COLUMNS)
    stages = pd.DataFrame(stage_rows, columns=["model", "stage", "task", *METRICS])
    return ProbeResult(table, stages, imbalance_measures(table), results)


def save_probe(result: ProbeResult, out_dir: Path, info: dict, detections: bool = True) -> None:
    """Write ``out_dir/probe.csv`` (the table), ``probe.json`` (``info``, then the table, the
    DI stages and the imbalance measures) and, with ``detections``, the COCO result files
    ``detections/layer{L}_{bbox,segm}.json``; each file atomically."""
    if detections:
        for layer, found in result.results.items():
            boxes = [{k: v for k, v in r.items() if k != "segmentation"} for r in found]
            for iou, entries in (("bbox", boxes), ("segm", found)):
                atomic_write_text(out_dir / "detections" / f"layer{layer}_{iou}.json",
                                  json.dumps(entries))
    atomic_write_text(out_dir / "probe.csv", result.table.to_csv(index=False))
    atomic_write_text(out_dir / "probe.json", json.dumps({
        **info, "table": result.table.to_dict(orient="records"),
        "di_stages": result.stages.to_dict(orient="records"),
        "imbalance": result.imbalance}, indent=2))
