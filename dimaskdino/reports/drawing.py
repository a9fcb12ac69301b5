"""How detections are drawn, for ``dimask visualize`` and the report's gallery: on the image,
each kept detection's mask as a translucent tint, its predicted box (solid) and the tight
box of its mask (dashed) in its class colour, so that a box that does not fit its own mask
shows; ground-truth masks as white outlines; a legend of the classes and line styles.

What is drawn comes from :mod:`dimaskdino.analysis.layer_detections`. matplotlib only, on
its Agg canvas, with :class:`~matplotlib.figure.Figure` objects (no pyplot state). Geometry
is in image pixels with pixel ``(r, c)`` covering ``[c, c + 1) x [r, r + 1)``, the
convention of the tight boxes.
"""

from __future__ import annotations

import colorsys
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from dimaskdino.analysis.layer_detections import Detections, ImageView

MASK_ALPHA = 0.45
BOX_WIDTH = 1.6      # points
PANEL_INCHES = 4.0   # the longer side of a panel on the page
DPI = 100
GROUND_TRUTH = "white"
GROUND_TRUTH_WIDTH = 1.5
_OUTLINE = [patheffects.withStroke(linewidth=3.2, foreground="black")]


@dataclass
class Panel:
    """One axes: ``title``, ``image (H, W, 3)`` uint8, the ``detections`` drawn on it and the
    ``ground_truth`` outlined (or None)."""

    title: str
    image: np.ndarray
    detections: Detections
    ground_truth: Detections | None = None


def class_colour(label: int) -> tuple[float, float, float]:
    """RGB in [0, 1] of a class: matplotlib's ``tab10`` for the first ten, then hues spread
    by the golden ratio."""
    if label < 10:
        return tuple(mpl.colormaps["tab10"].colors[label])
    return colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.75, 0.9)


def draw_panel(ax, panel: Panel) -> None:
    """Draw ``panel`` on ``ax``: the image, the mask tints (the best-scoring detection on
    top, without compounding overlaps), boxes and tight boxes, ground-truth outlines."""
    height, width = panel.image.shape[:2]
    extent = (0, width, height, 0)
    ax.imshow(panel.image, extent=extent, interpolation="nearest")
    found = panel.detections
    if len(found):
        overlay = np.zeros((height, width, 4))
        for k in reversed(range(len(found))):
            overlay[found.masks[k]] = (*class_colour(int(found.labels[k])), MASK_ALPHA)
        ax.imshow(overlay, extent=extent, interpolation="nearest")
    for box, tight, label in zip(found.boxes, found.tight_boxes(), found.labels):
        colour = class_colour(int(label))
        ax.add_patch(Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, edgecolor=colour,
                               linewidth=BOX_WIDTH))
        if (tight[2:] > tight[:2]).all():
            ax.add_patch(Rectangle(tight[:2], *(tight[2:] - tight[:2]), fill=False,
                                   edgecolor=colour, linewidth=BOX_WIDTH, linestyle="--"))
    if panel.ground_truth is not None:
        xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
        for mask in panel.ground_truth.masks:
            if mask.any():
                lines = ax.contour(xs, ys, mask.astype(float), levels=[0.5],
                                   colors=GROUND_TRUTH, linewidths=GROUND_TRUTH_WIDTH)
                lines.set_path_effects(_OUTLINE)
    ax.set(xlim=(0, width), ylim=(height, 0))
    ax.set_axis_off()
    ax.set_title(panel.title, fontsize=9)


def layer_title(layer: int, last: int, detections: Detections) -> str:
    """``layer 0: box-mask IoU 0.62 (5 detections)``; ``layer 3 (last)`` for the final one."""
    name = f"layer {layer}{' (last)' if layer == last else ''}"
    if not len(detections):
        return f"{name}: no detection kept"
    iou = detections.mean_box_mask_iou()
    iou_text = "n/a" if math.isnan(iou) else f"{iou:.2f}"
    plural = "s" if len(detections) > 1 else ""
    return f"{name}: box-mask IoU {iou_text} ({len(detections)} detection{plural})"


def _legend(figure: Figure, panels: list[Panel], class_names: Sequence[str]) -> None:
    labels = sorted({int(k) for p in panels for k in p.detections.labels})
    handles = [Patch(facecolor=(*class_colour(k), MASK_ALPHA), edgecolor=class_colour(k),
                     label=class_names[k] if k < len(class_names) else f"class {k}")
               for k in labels]
    handles += [Line2D([], [], color="0.2", linewidth=BOX_WIDTH, label="predicted box"),
                Line2D([], [], color="0.2", linewidth=BOX_WIDTH, linestyle="--",
                       label="tight box of the predicted mask")]
    if any(p.ground_truth is not None for p in panels):
        handles.append(Line2D([], [], color=GROUND_TRUTH, linewidth=GROUND_TRUTH_WIDTH,
                              path_effects=_OUTLINE, label="ground truth"))
    figure.legend(handles=handles, loc="outside lower center", frameon=False, fontsize=8,
                  ncol=min(len(handles), 6))


def panel_figure(rows: Sequence[Sequence[Panel]], class_names: Sequence[str],
                 title: str = "") -> Figure:
    """A grid of panels (rows of equal length), each at :data:`PANEL_INCHES` on its longer
    side, with one legend below and ``title`` above."""
    columns = max(len(row) for row in rows)
    height, width = rows[0][0].image.shape[:2]
    scale = PANEL_INCHES / max(height, width)
    figure = Figure(figsize=(columns * width * scale + 0.4,
                             len(rows) * (height * scale + 0.35) + 1.0), dpi=DPI,
                    layout="constrained")
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, row_axes in zip(rows, axes):
        for panel, ax in zip(row, row_axes):
            draw_panel(ax, panel)
        for ax in row_axes[len(row):]:
            ax.set_visible(False)
    _legend(figure, [p for row in rows for p in row], class_names)
    if title:
        figure.suptitle(title, fontsize=10, fontweight="bold")
    return figure


def view_figure(view: ImageView, layers: Sequence[int]) -> Figure:
    """One image, one panel per layer of ``layers`` (as requested), titled by layer and the
    image's mean box-mask IoU."""
    panels = [Panel(layer_title(layer, view.last, view.layers[layer]), view.image,
                    view.layers[layer], view.ground_truth) for layer in layers]
    return panel_figure([panels], view.class_names, view.name)


def encode(figure: Figure, form: str = "png") -> bytes:
    """``figure`` as PNG bytes (``form="png"``) or SVG bytes (``"svg"``, no date: the same
    figure gives the same file)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    metadata = {"Date": None} if form == "svg" else None
    with mpl.rc_context({"svg.hashsalt": "dimask"}):
        figure.savefig(buffer, format=form, dpi=DPI, metadata=metadata)
    return buffer.getvalue()
