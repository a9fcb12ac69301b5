"""The layer probe: AP_box and AP_mask of every decoder layer from one forward pass.

Layer 0 is the prediction from the decoder's input queries, layer ``l`` that of decoder
layer ``l``; the last layer is the model's output. One forward pass per batch keeps every
layer's logits, boxes and masks; each layer is post-processed exactly like the last one
(:func:`~dimaskdino.modeling.postprocess.stacked_instance_inference`: top (query, class) pairs,
masks resized to the original image, scores = class x mask confidence) and evaluated with
COCO's definitions. For DI-MaskDINO the probe also scores the boxes of DI's token-
interaction stages (``ti1``, ``ti2``, ...; class and box only, so box AP only).

A third task, ``mask-box``, scores the tight box of each detection's mask as a box (same
detections, same scores): if at the first layer it scores well above the predicted boxes,
the detection lag is the box head's, not the features'.

Imbalance measures (paper §1, Fig. 1): per layer ``gap = AP_mask - AP_box``; the gap at the
first and the last layer; its change from first to last (negative = the detection lag
shrinks through the decoder); and, to say *why* boxes lag, TIDE's localization error
(``Loc`` delta AP) of box minus mask at the first and the last layer (positive = boxes
lose more AP to badly placed boxes than masks do to badly placed masks).

Per layer the probe also decomposes each task's AP into TIDE's error types
(:func:`~dimaskdino.engine.evaluator.tide_errors`) and measures box-mask consistency
(:mod:`dimaskdino.analysis.consistency`), which needs no labels: on a dataset without
annotations (``images:DIR``) the probe measures consistency only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dimaskdino.analysis.consistency import consistency_summary
from dimaskdino.analysis.layers import layer_instances
from dimaskdino.config_ranges import ConfigError
from dimaskdino.data.coco import DatasetError
from dimaskdino.data.loader import EvaluationImages
from dimaskdino.engine import distributed
from dimaskdino.engine.evaluator import (
    METRICS,
    TIDE_BACKGROUND_IOU,
    TIDE_POS_IOU,
    Backend,
    CocoResults,
    check_categories,
    coco_evaluate,
    hotcoco_evaluation,
    hotcoco_ground_truth,
    summary,
    tide_errors,
)
from dimaskdino.engine.inference import predictions
from dimaskdino.engine.precision import Precision
from dimaskdino.fileio import atomic_write_text
from dimaskdino.modeling.model import DIMaskDINO
from dimaskdino.modeling.postprocess import box_inference

COLUMNS = ["model", "layer", "task", *METRICS]
ERROR_COLUMNS = ["model", "layer", "task", "error", "dAP"]
CONSISTENCY_COLUMNS = ["model", "layer", "detections", "mean_iou", "frac_below_0.5"]
TASKS = {"bbox": "box", "segm": "mask"}
# what each probe task scores: (COCO iou type, task); ``mask-box`` is the box AP of each
# detection's mask's tight box (same detections, same scores)
SCORED_TASKS = (("bbox", "box"), ("segm", "mask"), ("bbox", "mask-box"))
TIDE_THRESHOLDS = {"pos_iou": TIDE_POS_IOU, "background_iou": TIDE_BACKGROUND_IOU}


@dataclass
class ProbeResult:
    """``table``: one row per (layer, task) with :data:`COLUMNS` (tasks ``box``, ``mask``,
    ``mask-box``: :data:`SCORED_TASKS`); ``stages``: DI's
    token-interaction stages (columns model, stage, task, AP...; empty without DI);
    ``imbalance``: see :func:`imbalance_measures`; ``errors``: TIDE delta AP per (layer,
    task, error) with :data:`ERROR_COLUMNS`; ``consistency``: box-mask consistency per layer
    with :data:`CONSISTENCY_COLUMNS`; ``results``: each layer's COCO results, masks
    included (``results[layer]``; box scoring ignores the masks). Without annotations
    ``table``, ``stages`` and ``errors`` are empty and ``imbalance`` is ``{}``."""

    table: pd.DataFrame
    stages: pd.DataFrame
    imbalance: dict
    errors: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ERROR_COLUMNS))
    consistency: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=CONSISTENCY_COLUMNS))
    results: dict[int, CocoResults] = field(repr=False, default_factory=dict)

    @property
    def has_ap(self) -> bool:
        """False for a probe of images without annotations (consistency only)."""
        return not self.table.empty


def imbalance_measures(table: pd.DataFrame, errors: pd.DataFrame | None = None) -> dict:
    """Per-layer ``AP_mask - AP_box`` and its first / last values and change; with
    ``errors`` (see :class:`ProbeResult`) also the first- and last-layer ``Loc`` delta AP
    of box minus mask."""
    wide = table.pivot(index="layer", columns="task", values="AP").sort_index()
    gaps = (wide["mask"] - wide["box"]).round(6)
    first, last = int(gaps.index[0]), int(gaps.index[-1])
    measures = {"gap_per_layer": {int(k): float(v) for k, v in gaps.items()},
                "first_layer": first, "last_layer": last,
                "first_layer_gap": float(gaps[first]), "last_layer_gap": float(gaps[last]),
                "gap_change": float(gaps[last] - gaps[first])}
    if errors is not None and not errors.empty:
        loc = errors[errors["error"] == "Loc"].pivot(index="layer", columns="task",
                                                     values="dAP")
        difference = (loc["box"] - loc["mask"]).round(6)
        measures.update(first_layer_loc_box_minus_mask=float(difference[first]),
                        last_layer_loc_box_minus_mask=float(difference[last]))
    return measures


def _consistency(name: str, results: dict[int, CocoResults]) -> pd.DataFrame:
    """:func:`consistency_summary` of each layer's results."""
    return pd.DataFrame([{"model": name, "layer": layer, **consistency_summary(found)}
                         for layer, found in results.items()], columns=CONSISTENCY_COLUMNS)


def _score_layers(ground_truth: dict, results: dict[int, CocoResults], name: str,
                  backend: Backend) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AP table and TIDE errors of every layer's results for each of
    :data:`SCORED_TASKS`. hotcoco matches each (layer, task) once for both; another backend
    scores AP and hotcoco the errors."""
    reference = hotcoco_ground_truth(ground_truth)
    rows, errors = [], []
    for layer, detections in results.items():
        for iou, task in SCORED_TASKS:
            found = detections.with_mask_boxes() if task == "mask-box" else detections
            key = {"model": name, "layer": layer, "task": task}
            evaluation = hotcoco_evaluation(reference, found, iou) if len(found) else None
            if backend != "hotcoco" or evaluation is None:
                metrics = coco_evaluate(ground_truth, found, iou, backend)
            else:
                metrics = summary(evaluation)
            rows.append({**key, **metrics})
            dap = tide_errors(evaluation) if evaluation is not None else {}
            errors += [{**key, "error": error, "dAP": value} for error, value in dap.items()]
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(errors, columns=ERROR_COLUMNS)


def _check_masks(dataset: EvaluationImages) -> None:
    missing = sum("segmentation" not in a for a in dataset.dataset.data["annotations"])
    if missing:
        raise DatasetError(f"{dataset.dataset.annotation_file}: {missing} annotations have no "
                           "segmentation; the layer probe evaluates masks and needs them")


def probe_layers(model: DIMaskDINO, dataset: EvaluationImages, layers: list[int] | None = None,
                 batch_size: int = 1, backend: Backend = "hotcoco", progress: bool = True,
                 workers: int = 0, precision: str | Precision = "fp32",
                 announce: Callable[[str], None] | None = None) -> ProbeResult:
    """Probe ``layers`` (default: all, 0..L) of ``model`` on ``dataset`` (one without
    annotations: consistency only, category ids 1..C), predicting in ``precision``
    (``announce``: see :func:`~dimaskdino.engine.inference.predictions`)."""
    last = model.config.predictor.dec_layers
    layers = list(range(last + 1)) if layers is None else sorted(set(layers))
    if not layers or any(not 0 <= layer <= last for layer in layers):
        raise ConfigError(f"--layers {','.join(map(str, layers)) or '(none)'}: layers must lie "
                          f"in 0..{last} (at least one) for a model with {last} decoder layers")
    labelled = dataset.dataset.has_annotations
    if labelled:
        check_categories(model, dataset)
        _check_masks(dataset)
    category_ids = (dataset.dataset.category_ids if labelled else
                    range(1, model.config.predictor.num_classes + 1))
    topk = model.config.detections_per_image
    parts: dict[int, list[CocoResults]] = {layer: [] for layer in layers}
    stage_parts: dict[str, list[CocoResults]] = {}
    for targets, pred in predictions(model, dataset, batch_size, all_layers=True,
                                     workers=workers, progress=progress, description="probe",
                                     precision=precision, announce=announce, masks="rle"):
        image_ids = [target["image_id"] for target in targets]
        for image_id, found in zip(image_ids, layer_instances(pred, layers, topk, masks="rle"),
                                   strict=True):
            for layer in layers:
                parts[layer].append(CocoResults.from_instances(found[layer], image_id,
                                                               category_ids))
        for index, stage in enumerate(pred.outputs.get("di", {}).get("aux", [])):
            boxes = box_inference(stage["pred_logits"], stage["pred_boxes"], pred.padded_size,
                                  pred.image_sizes, pred.output_sizes, topk)
            stage_parts.setdefault(f"ti{index + 1}", []).extend(
                CocoResults.from_instances(found, image_id, category_ids, masks=False)
                for image_id, found in zip(image_ids, boxes, strict=True))
    name = model.config.name
    results = {layer: CocoResults.concat(distributed.gather_lists(parts[layer]))
               for layer in layers}
    stage_results = {stage: CocoResults.concat(distributed.gather_lists(found))
                     for stage, found in stage_parts.items()}
    consistency = _consistency(name, results)
    if not labelled:
        return ProbeResult(pd.DataFrame(columns=COLUMNS),
                           pd.DataFrame(columns=["model", "stage", "task", *METRICS]), {},
                           consistency=consistency, results=results)
    ground_truth = dataset.dataset.data
    table, errors = _score_layers(ground_truth, results, name, backend)
    stage_rows = [{"model": name, "stage": stage, "task": "box",
                   **coco_evaluate(ground_truth, found, "bbox", backend)}
                  for stage, found in stage_results.items()]
    stages = pd.DataFrame(stage_rows, columns=["model", "stage", "task", *METRICS])
    return ProbeResult(table, stages, imbalance_measures(table, errors), errors, consistency,
                       results)


def detection_files(out_dir: Path, layer: int) -> dict[str, Path]:
    """``{"bbox": out_dir/detections/layer{L}_bbox.json, "segm": ...}``."""
    return {iou: out_dir / "detections" / f"layer{layer}_{iou}.json" for iou in TASKS}


def save_probe(result: ProbeResult, out_dir: Path, info: dict, detections: bool = True) -> None:
    """Write ``out_dir/probe.json`` (``info``, TIDE's thresholds, then the table, the DI
    stages, the imbalance measures, the errors and the consistency), ``consistency.csv``
    and, with AP (a labelled dataset), ``probe.csv`` (the table) and ``errors.csv``; with
    ``detections``, the COCO result files ``detections/layer{L}_{bbox,segm}.json``, which
    list the same detections in the same order (the bbox file without the masks); each
    file atomically."""
    if detections:
        for layer, found in result.results.items():
            for iou, path in detection_files(out_dir, layer).items():
                atomic_write_text(path, json.dumps(found.to_dicts(masks=iou == "segm")))
    if result.has_ap:
        atomic_write_text(out_dir / "probe.csv", result.table.to_csv(index=False))
        atomic_write_text(out_dir / "errors.csv", result.errors.to_csv(index=False))
    atomic_write_text(out_dir / "consistency.csv", result.consistency.to_csv(index=False))
    atomic_write_text(out_dir / "probe.json", json.dumps({
        **info, "tide": TIDE_THRESHOLDS, "table": result.table.to_dict(orient="records"),
        "di_stages": result.stages.to_dict(orient="records"),
        "imbalance": result.imbalance, "errors": result.errors.to_dict(orient="records"),
        "consistency": result.consistency.to_dict(orient="records")}, indent=2))
