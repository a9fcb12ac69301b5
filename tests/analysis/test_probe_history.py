"""Learning-speed measures of a probe history, on hand-made curves with known crossings;
the history file's merge and truncation."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dimaskdino.analysis.probe_history import (
    HISTORY_COLUMNS,
    append_history,
    learning_speed,
    read_history,
    truncate_history,
)

ITERATIONS = [100, 200, 300, 400]
# (layer, task) -> AP at ITERATIONS; box crosses 50% of its final AP (10) at 300 and 90% at
# 400, mask crosses them at 200 and 300; layer 1's box dips after crossing (first crossing
# counts), its mask never learns
CURVES = {(0, "box"): [0.0, 2.0, 6.0, 10.0], (0, "mask"): [4.0, 8.0, 10.0, 10.0],
          (1, "box"): [0.0, 6.0, 4.0, 10.0], (1, "mask"): [0.0, 0.0, 0.0, 0.0]}


def history(curves=CURVES, iterations=ITERATIONS) -> pd.DataFrame:
    rows = [{"iteration": it, "layer": layer, "task": task, "AP": ap, "AP50": ap,
             "AP75": ap, "Loc": 0.0, "Cls": 0.0}
            for (layer, task), values in curves.items() for it, ap in zip(iterations, values)]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def trapezoid_auc(values, iterations=ITERATIONS) -> float:
    """Area under the piecewise-linear curve over the probed span, divided by final AP and
    span (written out independently of the module's numpy)."""
    area = sum((values[i] + values[i + 1]) / 2 * (iterations[i + 1] - iterations[i])
               for i in range(len(values) - 1))
    return area / (values[-1] * (iterations[-1] - iterations[0]))


def test_learning_speed_on_known_crossings():
    measures = learning_speed(history())
    curves = {(c["layer"], c["task"]): c for c in measures["curves"]}
    assert measures["iterations"] == ITERATIONS and measures["first_layer"] == 0
    assert (curves[0, "box"]["iteration_50"], curves[0, "box"]["iteration_90"]) == (300, 400)
    assert (curves[0, "mask"]["iteration_50"], curves[0, "mask"]["iteration_90"]) == (200, 300)
    assert curves[1, "box"]["iteration_50"] == 200  # the first crossing, not the last
    assert curves[1, "box"]["iteration_90"] == 400
    for key in ((0, "box"), (0, "mask"), (1, "box")):
        assert curves[key]["auc"] == pytest.approx(trapezoid_auc(CURVES[key]))
        assert curves[key]["final_AP"] == CURVES[key][-1]
    never = curves[1, "mask"]
    assert never["iteration_50"] is None and never["auc"] is None
    # box reaches half its final AP 100 iterations after mask: detection is slower
    assert measures["first_layer_gap_50"] == 300 - 200
    swapped = learning_speed(history({(0, "box"): CURVES[0, "mask"],
                                      (0, "mask"): CURVES[0, "box"]}))
    assert swapped["first_layer_gap_50"] == -100
    json.dumps(measures)  # what probe_history.json holds


def test_one_probe_has_crossings_but_no_area():
    measures = learning_speed(history({(0, "box"): [5.0], (0, "mask"): [7.0]}, [50]))
    box = measures["curves"][0]
    assert box["iteration_50"] == 50 and box["auc"] is None
    assert measures["first_layer_gap_50"] == 0


def test_append_replaces_and_truncate_drops_later_rows(tmp_path):
    full = history()
    append_history(tmp_path, full[full["iteration"] <= 300])
    again = full[full["iteration"] >= 300].assign(AP=lambda f: f["AP"] + 1)
    merged = append_history(tmp_path, again)
    assert len(merged) == len(full)
    assert merged.equals(read_history(tmp_path))
    at_300 = merged[merged["iteration"] == 300].set_index(["layer", "task"])["AP"]
    assert at_300[(0, "box")] == CURVES[0, "box"][2] + 1  # the newer probe wins
    truncate_history(tmp_path, 200)
    assert sorted(set(read_history(tmp_path)["iteration"])) == [100, 200]
    measures = json.loads((tmp_path / "probe_history.json").read_text())
    assert measures["iterations"] == [100, 200]
