"""The drawing: a hand-made detection with a known box and mask, drawn and read back pixel by
pixel; figures of several panels with a legend."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from dimaskdino.analysis.layer_detections import Detections, ImageView
from dimaskdino.reports.drawing import (
    DPI,
    MASK_ALPHA,
    Panel,
    class_colour,
    draw_panel,
    encode,
    view_figure,
)

HEIGHT, WIDTH, GREY = 120, 160, 128
BOX = (20, 30, 130, 100)          # x0, y0, x1, y1: the predicted box
MASK = (50, 45, 100, 85)          # the mask's pixels: columns 50..99, rows 45..84
LABEL = 2


def _pixels(panel: Panel) -> np.ndarray:
    """``panel`` drawn on axes that fill a figure of exactly the image's size in pixels."""
    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    draw_panel(figure.add_axes((0, 0, 1, 1)), panel)
    figure.axes[0].set_title("")
    return np.asarray(Image.open(io.BytesIO(encode(figure))).convert("RGB")).astype(int)


def _detection() -> Detections:
    masks = np.zeros((1, HEIGHT, WIDTH), bool)
    x0, y0, x1, y1 = MASK
    masks[0, y0:y1, x0:x1] = True
    return Detections(np.array([BOX], float), masks, np.array([LABEL]), np.array([0.9]))


def _near(shape: tuple[int, int], box, margin: int) -> np.ndarray:
    """Pixels within ``margin`` of the outline of ``box`` (x0, y0, x1, y1)."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    x0, y0, x1, y1 = box
    inside = (cols >= x0 - margin) & (cols < x1 + margin) & (rows >= y0 - margin) & (
        rows < y1 + margin)
    core = (cols >= x0 + margin) & (cols < x1 - margin) & (rows >= y0 + margin) & (
        rows < y1 - margin)
    return inside & ~core


def test_box_edges_and_mask_tint_are_where_the_detection_is():
    image = np.full((HEIGHT, WIDTH, 3), GREY, np.uint8)
    drawn = _pixels(Panel("", image, _detection()))
    colour = np.array(class_colour(LABEL)) * 255
    tint = MASK_ALPHA * colour + (1 - MASK_ALPHA) * GREY
    x0, y0, x1, y1 = BOX
    # the box colour on every edge: each position along an edge has a pixel of that colour
    for edge in (drawn[y0 - 1:y0 + 2, x0 + 5:x1 - 5], drawn[y1 - 2:y1 + 1, x0 + 5:x1 - 5],
                 drawn[y0 + 5:y1 - 5, x0 - 1:x0 + 2].transpose(1, 0, 2),
                 drawn[y0 + 5:y1 - 5, x1 - 2:x1 + 1].transpose(1, 0, 2)):
        closest = np.abs(edge - colour).max(axis=2).min(axis=0)
        assert closest.max() <= 10, closest
    # the mask tint inside the mask, away from the dashed tight box on its border
    mx0, my0, mx1, my1 = MASK
    inner = drawn[my0 + 3:my1 - 3, mx0 + 3:mx1 - 3]
    assert np.abs(inner - tint).max() <= 2
    # and nothing elsewhere: the untouched image outside the box and mask outlines
    lines = _near((HEIGHT, WIDTH), BOX, 3) | _near((HEIGHT, WIDTH), MASK, 3)
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    in_mask = (cols >= mx0) & (cols < mx1) & (rows >= my0) & (rows < my1)
    elsewhere = ~lines & ~in_mask
    assert elsewhere.sum() > 0.7 * HEIGHT * WIDTH
    assert (drawn[elsewhere] == GREY).all()
    # the dashed tight box: the box colour on the mask's border, in dashes (gaps show tint)
    top = drawn[my0 - 1:my0 + 2, mx0 + 4:mx1 - 4]
    coloured = np.abs(top - colour).max(axis=2).min(axis=0) <= 10
    assert 0.2 < coloured.mean() < 0.9


def test_ground_truth_outline_and_empty_panel():
    image = np.full((HEIGHT, WIDTH, 3), GREY, np.uint8)
    truth = _detection()
    empty = Detections(np.zeros((0, 4)), np.zeros((0, HEIGHT, WIDTH), bool),
                       np.zeros(0, int), np.zeros(0))
    drawn = _pixels(Panel("", image, empty, truth))
    mx0, my0, mx1, my1 = MASK
    # a white outline with a dark edge on the mask's border, the image untouched inside and
    # far outside it
    border = drawn[my0 - 3:my0 + 4, mx0 + 5:mx1 - 5]
    assert (border.min(axis=2) >= 200).any(axis=0).all()
    assert (border.max(axis=2) <= 40).any(axis=0).all()
    assert (drawn[my0 + 4:my1 - 4, mx0 + 4:mx1 - 4] == GREY).all()
    assert (drawn[:my0 - 5] == GREY).all()


def test_view_figure_has_one_panel_per_layer_and_a_legend():
    image = np.full((HEIGHT, WIDTH, 3), GREY, np.uint8)
    found = _detection()
    view = ImageView("img", image, {0: found, 3: found}, 3, None, ["a", "b", "c"])
    figure = view_figure(view, [0, 3])
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["layer 0: box-mask IoU 0.26 (1 detection)",
                      "layer 3 (last): box-mask IoU 0.26 (1 detection)"]
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "c", "predicted box", "tight box of the predicted mask"]
    assert encode(figure).startswith(b"\x89PNG")
    assert encode(figure, "svg").startswith(b"<?xml")
