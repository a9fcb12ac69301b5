"""The report's figures, on hand-made sections."""

from __future__ import annotations

import pandas as pd

from dimaskdino.experiments.registry import get_study
from dimaskdino.reports import figures
from dimaskdino.reports.runs import Section


def _section(layers: list[tuple[str, int, float, float]]) -> Section:
    """The ``modules`` study with one seed of its baseline and di+bato cells whose
    per-layer (cell, layer, AP box, AP mask) are ``layers``."""
    runs = pd.DataFrame({"run_id": ["a", "b"], "cell": ["baseline", "di+bato"], "seed": 0,
                         "model": ["maskdino", "dimaskdino"], "scale": "tiny",
                         "dataset": "synthetic", "final_ap_box": 0.0, "final_ap_mask": 0.0})
    frame = pd.DataFrame(layers, columns=["cell", "layer", "ap_box", "ap_mask"])
    return Section(get_study("modules"), "tiny", "synthetic", runs, pd.DataFrame(),
                   frame.assign(seed=0), pd.DataFrame(columns=["cell", "seed", "iteration",
                                                               "loss"]))


def test_figure_one_shows_the_taller_panel_whole(monkeypatch):
    # the second panel's bars are the taller ones: a y-axis fixed by the first cut them
    section = _section([("baseline", 0, 0.9, 6.8), ("baseline", 3, 4.5, 6.6),
                        ("di+bato", 0, 5.1, 8.7), ("di+bato", 3, 8.5, 11.6)])
    drawn = {}
    monkeypatch.setattr(figures, "_render", lambda figure, *args: drawn.setdefault("f", figure))
    figures.figure_one(section, ("baseline", "di+bato"))
    left, right = drawn["f"].axes[:2]
    assert left.get_ylim() == right.get_ylim()
    assert left.get_ylim()[0] == 0 and left.get_ylim()[1] > 11.6


def test_layer_curves_give_each_panel_its_own_scale(monkeypatch):
    # 950c975's demo: DI-MaskDINO's AP mask (8.9-10.3) drawn above a shared top of 6.5
    section = _section([("baseline", 0, 0.9, 4.2), ("baseline", 3, 4.5, 6.0),
                        ("di+bato", 0, 5.1, 8.9), ("di+bato", 3, 8.5, 10.3)])
    drawn = {}
    monkeypatch.setattr(figures, "_render", lambda figure, *args: drawn.setdefault("f", figure))
    figures.layer_curves(section)
    left, right = drawn["f"].axes[:2]
    for ax, top in ((left, 6.0), (right, 10.3)):
        low, high = ax.get_ylim()
        assert low == 0 and high >= top
        assert all(max(line.get_ydata(), default=0) <= high for line in ax.get_lines())
    assert left.get_ylim()[1] < 10.3  # its own scale, not the taller panel's
