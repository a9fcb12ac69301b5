"""The report's gallery (paper Fig. 1a/b): a few val images, MaskDINO vs DI-MaskDINO, first vs
last decoder layer, side by side.

Each finished cell logged ``gallery/`` with its run (:func:`~dimaskdino.analysis.
layer_detections.gallery_views`: the images of a fixed rule, their ground truth and the
kept detections of the first and the last layer), so the report draws from the MLflow store
alone, wherever the cells ran and whether or not their checkpoints still exist.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from dimaskdino.analysis.layer_detections import GALLERY_RULE, GALLERY_SCORE, load_views
from dimaskdino.reports.drawing import Panel, layer_title, panel_figure
from dimaskdino.reports.figures import MODEL_NAMES, Chart, _render, figure_one_cells
from dimaskdino.reports.runs import Section

ARTIFACT = "gallery"


def _cell_views(client, section: Section, cell: str):
    """(model name, seed, views) of the lowest seed of ``cell``; None without a gallery."""
    runs = section.runs[section.runs["cell"] == cell].sort_values("seed")
    run = runs.iloc[0]
    if not client.list_artifacts(run["run_id"], ARTIFACT):
        return None
    with tempfile.TemporaryDirectory() as folder:
        local = client.download_artifacts(run["run_id"], ARTIFACT, folder)
        views = load_views(Path(local))
    return MODEL_NAMES.get(run["model"], run["model"]), int(run["seed"]), views


def section_gallery(tracking_uri: str, section: Section) -> Chart | None:
    """The gallery of ``section``'s Figure 1 cells (:func:`~dimaskdino.reports.figures.
    figure_one_cells`): one row per image, panels MaskDINO first / last layer, DI-MaskDINO
    first / last layer; None when the section lacks either model or its runs logged no
    gallery."""
    from mlflow.tracking import MlflowClient

    cells = figure_one_cells(section)
    if cells is None:
        return None
    client = MlflowClient(tracking_uri)
    found = [_cell_views(client, section, cell) for cell in cells]
    if None in found or not all(views for _, _, views in found):
        return None
    rows = [[Panel(f"{model}, {layer_title(layer, view.last, view.layers[layer])}",
                   view.image, view.layers[layer], view.ground_truth)
             for (model, _, _), view in zip(found, same) for layer in sorted(view.layers)]
            for same in zip(*(views for _, _, views in found))]
    figure = panel_figure(rows, found[0][2][0].class_names)
    seeds = ", ".join(f"{cell} seed {seed}" for (_, seed, _), cell in zip(found, cells))
    return _render(figure, f"{section.key}-gallery",
                   "Figure 1 (a, b): boxes and masks at the first and the last layer",
                   f"Images: {GALLERY_RULE}; runs: {seeds}. Detections scoring at least "
                   f"{GALLERY_SCORE}: mask tinted in the class colour, predicted box solid, "
                   "tight box of the predicted mask dashed, ground truth outlined in white; "
                   "each title gives the mean IoU of each box with its mask's tight box "
                   "(a box that fits its mask scores 1).")
