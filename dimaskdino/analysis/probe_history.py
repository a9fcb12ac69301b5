"""The layer probe over training: how the first-layer imbalance forms (paper §1).

A run's ``probe_history.csv`` holds one row per (iteration, layer, task) with
:data:`HISTORY_COLUMNS`: AP, AP50, AP75 and TIDE's ``Loc`` and ``Cls`` delta AP of each
probe task (``box``, ``mask``, ``mask-box``, see :mod:`dimaskdino.analysis.probe`). The
trainer appends to it every ``solver.probe_period`` iterations and at the end; ``dimask
layer-probe RUN --checkpoints all`` writes it from a run's saved checkpoints. Beside it,
``probe_history.json`` holds the learning-speed measures (:func:`learning_speed`).

The paper's second cause of the imbalance is that "the optimization speeds of the two
tasks are not synchronous": dense mask supervision teaches segmentation faster than the
sparse box supervision teaches detection. :func:`learning_speed` measures it: per (layer,
task) the first iteration whose AP reaches 50% and 90% of the final AP and the area under
the AP curve normalised by the final AP; at the first layer the iteration gap between box
and mask reaching 50% (positive: detection is slower).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd

from dimaskdino.analysis.probe import ProbeResult
from dimaskdino.data.loader import EvaluationImages
from dimaskdino.fileio import atomic_write_text

HISTORY_CSV, HISTORY_JSON = "probe_history.csv", "probe_history.json"
HISTORY_ERRORS = ("Loc", "Cls")
HISTORY_COLUMNS = ["iteration", "layer", "task", "AP", "AP50", "AP75", *HISTORY_ERRORS]
KEY = ["iteration", "layer", "task"]
REACHED = (0.5, 0.9)  # fractions of the final AP whose first crossing is reported


def history_metric(layer: int, metric: str, task: str) -> str:
    """The MLflow name of a history value (``step = iteration``): ``(0, "AP", "mask-box")``
    -> ``probe_l0_ap_mask_box``, ``(0, "Loc", "box")`` -> ``probe_l0_loc_box``; apart from
    the per-layer names (``ap_box``, ``step = layer``) of the final probe."""
    return f"probe_l{layer}_{metric.lower()}_{task.replace('-', '_')}"


def history_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """The values of one probe's rows under :func:`history_metric` names (NaN left out)."""
    return {history_metric(int(row["layer"]), metric, row["task"]): float(row[metric])
            for row in rows.to_dict(orient="records") for metric in HISTORY_COLUMNS[3:]
            if not pd.isna(row[metric])}


def first_images(dataset: EvaluationImages, count: int) -> EvaluationImages:
    """``dataset`` cut to its first ``count`` images by image id (all for 0 or more than it
    has), with the annotations of those images only, so that COCO scores them alone."""
    coco = dataset.dataset
    if not count or count >= len(coco):
        return dataset
    cut = copy.copy(coco)
    cut.images = coco.images[:count]
    kept = {image["id"] for image in cut.images}
    cut.data = {**coco.data, "images": [i for i in coco.data["images"] if i["id"] in kept],
                "annotations": [a for a in coco.data["annotations"] if a["image_id"] in kept]}
    return EvaluationImages(cut, dataset.short, dataset.max_size)


def history_rows(result: ProbeResult, iteration: int) -> pd.DataFrame:
    """The rows of one probe at ``iteration`` (:data:`HISTORY_COLUMNS`; an error TIDE did
    not measure, e.g. for a layer without detections, is NaN)."""
    errors = result.errors[result.errors["error"].isin(HISTORY_ERRORS)]
    wide = errors.pivot_table(index=["layer", "task"], columns="error", values="dAP")
    wide = wide.reindex(columns=list(HISTORY_ERRORS)).reset_index()
    rows = result.table[["layer", "task", "AP", "AP50", "AP75"]].merge(
        wide, on=["layer", "task"], how="left")
    return rows.assign(iteration=int(iteration))[HISTORY_COLUMNS]


def read_history(run_dir: Path) -> pd.DataFrame:
    """``run_dir/probe_history.csv`` (empty, with :data:`HISTORY_COLUMNS`, if absent)."""
    path = Path(run_dir) / HISTORY_CSV
    if not path.is_file():
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    return pd.read_csv(path)


def write_history(run_dir: Path, history: pd.DataFrame) -> pd.DataFrame:
    """Write ``history`` (sorted by iteration, layer, task) as ``probe_history.csv`` and its
    :func:`learning_speed` as ``probe_history.json``, each atomically; returns it sorted."""
    history = history.sort_values(KEY, kind="stable").reset_index(drop=True)
    atomic_write_text(Path(run_dir) / HISTORY_CSV, history.to_csv(index=False))
    atomic_write_text(Path(run_dir) / HISTORY_JSON,
                      json.dumps(learning_speed(history), indent=2))
    return history


def append_history(run_dir: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Add ``rows`` to the run's history (replacing rows of the same iteration, layer and
    task), rewrite both files; returns the whole history."""
    old = read_history(run_dir)
    parts = [frame for frame in (old, rows) if not frame.empty]
    return write_history(run_dir, pd.concat(parts, ignore_index=True).drop_duplicates(
        KEY, keep="last"))


def truncate_history(run_dir: Path, iteration: int) -> None:
    """Drop the rows after ``iteration`` (a run resumed from a checkpoint there redoes
    them); nothing when there is no history."""
    history = read_history(run_dir)
    if not history.empty and (history["iteration"] > iteration).any():
        write_history(run_dir, history[history["iteration"] <= iteration])


def _first_reaching(iterations: np.ndarray, ap: np.ndarray, level: float) -> int | None:
    reached = np.flatnonzero(ap >= level)
    return int(iterations[reached[0]]) if reached.size else None


def curve_measures(iterations: np.ndarray, ap: np.ndarray) -> dict:
    """Learning speed of one AP curve (``iterations`` increasing): ``final_AP``; for each
    fraction f of :data:`REACHED`, ``iteration_{100 f}``, the first probed iteration whose AP
    is at least f x the final AP; ``auc``, the trapezoid area under the curve over the
    probed iterations divided by the final AP and by their span (1 = the final AP from the
    first probe on, smaller = learned later). Without a positive final AP the crossings and
    the area are None; with one probe the area is None."""
    final = float(ap[-1])
    measures: dict = {"final_AP": final}
    learned = final > 0
    for fraction in REACHED:
        measures[f"iteration_{round(fraction * 100)}"] = (
            _first_reaching(iterations, ap, fraction * final) if learned else None)
    span = float(iterations[-1] - iterations[0])
    area = float(np.sum((ap[1:] + ap[:-1]) / 2 * np.diff(iterations)))
    measures["auc"] = area / (final * span) if learned and span > 0 else None
    return measures


def learning_speed(history: pd.DataFrame) -> dict:
    """The learning-speed measures of a history: ``iterations`` (those probed),
    ``curves`` (one record per (layer, task): layer, task and :func:`curve_measures`) and,
    at the first layer, ``first_layer_gap_50``: the iteration at which box AP reaches 50%
    of its final value minus that of mask AP (positive: detection learns slower; None if
    either never does)."""
    curves = []
    for (layer, task), rows in history.groupby(["layer", "task"], sort=True):
        ordered = rows.sort_values("iteration")
        curves.append({"layer": int(layer), "task": task, **curve_measures(
            ordered["iteration"].to_numpy(float), ordered["AP"].to_numpy(float))})
    first = min((c["layer"] for c in curves), default=None)
    reach = {c["task"]: c["iteration_50"] for c in curves if c["layer"] == first}
    box, mask = reach.get("box"), reach.get("mask")
    return {"iterations": sorted(int(i) for i in set(history["iteration"])),
            "first_layer": first, "curves": curves,
            "first_layer_gap_50": box - mask if box is not None and mask is not None
            else None}


def read_learning_speed(path: Path) -> dict | None:
    """The measures of a ``probe_history.json`` (None when the file is absent)."""
    return json.loads(path.read_text()) if path.is_file() else None



def run_checkpoints(run_dir: Path, official_config: Path | None = None
                    ) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every ``model_*.pth`` of ``run_dir`` (``model_final.pth``
    included), by iteration. A dimask checkpoint says its iteration; an official one
    (``official_config``: detectron2 names ``model_{iteration - 1:07d}.pth``) is numbered
    by its name, and its ``model_final.pth`` by the YAML's ``SOLVER.MAX_ITER``."""
    from dimaskdino.config import ConfigError, load_official_config
    from dimaskdino.engine.checkpointer import read_checkpoint

    found = []
    for path in sorted(Path(run_dir).glob("model_*.pth")):
        number = path.stem.removeprefix("model_")
        if official_config is None:
            found.append((int(read_checkpoint(path)["iteration"]), path))
        elif number.isdigit():
            found.append((int(number) + 1, path))
        elif number == "final":
            solver = load_official_config(official_config).get("SOLVER", {})
            if "MAX_ITER" not in solver:
                raise ConfigError(f"{official_config} sets no SOLVER.MAX_ITER, the iteration "
                                  f"of {path}")
            found.append((int(solver["MAX_ITER"]), path))
    if not found:
        raise ConfigError(f"{run_dir} holds no model_*.pth checkpoint")
    return sorted(found)
