"""The claims table on hand-made sections: effects, t-intervals (scipy) and verdicts."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

from dimaskdino.experiments.registry import get_study
from dimaskdino.reports.claims import CLAIMS, claims_table, verdict
from dimaskdino.reports.runs import Section


def _section(study: str, final: dict[str, list[tuple[float, float]]],
             first: dict[str, list[tuple[float, float]]] | None = None) -> Section:
    """``final[cell]``: (AP box, AP mask) per seed; ``first[cell]``: the same at layer 0."""
    chosen = get_study(study)
    runs, layers = [], []
    for cell, values in final.items():
        model = chosen.cell(cell).model
        for seed, (box, mask) in enumerate(values):
            runs.append({"run_id": f"{cell}{seed}", "cell": cell, "seed": seed, "model": model,
                         "scale": "tiny", "dataset": "synthetic", "final_ap_box": box,
                         "final_ap_mask": mask})
            box0, mask0 = (first or {}).get(cell, values)[seed]
            layers += [{"cell": cell, "seed": seed, "layer": 0, "ap_box": box0,
                        "ap_mask": mask0},
                       {"cell": cell, "seed": seed, "layer": 3, "ap_box": box, "ap_mask": mask}]
    empty = pd.DataFrame()
    return Section(chosen, "tiny", "synthetic", pd.DataFrame(runs), empty,
                   pd.DataFrame(layers), empty)


def _interval(values):
    mean = sum(values) / len(values)
    half = stats.t.ppf(0.975, len(values) - 1) * pd.Series(values).std() / len(values) ** 0.5
    return mean, mean - half, mean + half


def test_verdict_rule():
    assert verdict(0.1, 2.0, 3) == "agrees"
    assert verdict(-2.0, -0.1, 3) == "disagrees"
    assert verdict(-0.1, 2.0, 3) == verdict(0.0, 0.0, 2) == "inconclusive"
    assert verdict(float("nan"), float("nan"), 1) == "inconclusive (one seed)"


def test_modules_claims_with_three_seeds():
    section = _section("modules", {
        "baseline": [(20.0, 25.0), (21.0, 26.0), (19.0, 25.5)],
        "di": [(22.0, 25.0), (22.5, 25.9), (21.0, 25.6)],
        "di+bato": [(18.0, 24.0), (18.5, 25.0), (17.0, 24.0)],
    }, first={"baseline": [(5.0, 9.0), (6.0, 9.5), (5.5, 9.1)],
              "di+bato": [(6.0, 7.0), (6.5, 7.0), (6.2, 7.5)]})
    table, untested = claims_table([section])
    rows = table.set_index("effect")
    lag = rows.loc["layer-0 AP mask - AP box of MaskDINO (baseline)"]
    assert (lag["mean"], lag["ci_low"], lag["ci_high"]) == pytest.approx(
        _interval([4.0, 3.5, 3.6]))
    assert lag["verdict"] == "agrees" and lag["seeds"] == 3
    narrows = rows.loc["layer-0 gap (AP mask - AP box) of MaskDINO (baseline) minus that of "
                       "DI-MaskDINO (di+bato)"]
    assert narrows["mean"] == pytest.approx((3.0 + 3.0 + 2.3) / 3)
    assert narrows["verdict"] == "agrees"
    worse = rows.loc["final AP box of DI-MaskDINO (di+bato) minus MaskDINO (baseline)"]
    assert worse["mean"] == pytest.approx(-6.5 / 3) and worse["verdict"] == "disagrees"
    di = rows.loc["final AP box of di minus baseline"]
    assert (di["mean"], di["ci_low"], di["ci_high"]) == pytest.approx(_interval([2, 1.5, 2]))
    assert rows.loc["final AP mask of di minus baseline", "verdict"] == "inconclusive"
    assert "final AP box of bato minus baseline" not in rows.index  # bato did not run
    assert [c.source for c in untested] == ["§1", "Tab. 3", "Tab. 9"]  # §1: no history
    assert set(table["claim"]) == {c.text for c in CLAIMS} - {c.text for c in untested}


def _history(curves: dict[tuple[str, int], tuple[list[float], list[float]]]) -> pd.DataFrame:
    """Layer-0 probe histories at iterations 10, 20, 30, 40: ``curves[(cell, seed)]`` =
    (AP box, AP mask) per iteration."""
    return pd.DataFrame([
        {"cell": cell, "seed": seed, "iteration": 10 * (i + 1), "layer": 0, "task": task,
         "AP": ap} for (cell, seed), tasks in curves.items()
        for task, values in zip(("box", "mask"), tasks) for i, ap in enumerate(values)])


def test_mask_reaches_half_way_first():
    """§1 over seeds: box reaches 50% of its final AP 20, 10 and 20 iterations after mask
    (hand-made crossings), so the interval of those lags is tested against 0."""
    section = _section("modules", {"baseline": [(20.0, 25.0)] * 3,
                                   "di+bato": [(21.0, 25.0)] * 3})
    late, early = [0.0, 1.0, 6.0, 10.0], [6.0, 8.0, 9.0, 10.0]  # 50% at 30 / at 10
    middle = [0.0, 6.0, 8.0, 10.0]                                # 50% at 20
    section.history = _history({("baseline", 0): (late, early), ("baseline", 1): (middle, early),
                                ("baseline", 2): (late, early), ("di+bato", 0): (early, late)})
    table, _ = claims_table([section])
    row = table[table["source"] == "§1"].iloc[0]
    assert "MaskDINO (baseline)" in row["effect"] and row["seeds"] == 3
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(_interval([20, 10, 20]))
    assert row["verdict"] == "agrees"
    # a seed whose box never learns (final AP 0) has no crossing and is left out
    section.history = _history({("baseline", 0): (late, early),
                                ("baseline", 1): ([0.0] * 4, early)})
    row = claims_table([section])[0].set_index("source").loc["§1"]
    assert row["seeds"] == 1 and row["verdict"] == "inconclusive (one seed)"


def test_tolerance_and_depth_claims_and_one_seed():
    tolerance = _section("imbalance-tolerance", {
        "maskdino-standard": [(27.0, 23.0), (28.0, 24.0)],
        "maskdino-loss-weight": [(24.0, 22.0), (25.0, 23.5)],
        "di-standard": [(28.0, 25.0), (28.5, 25.0)],
        "di-loss-weight": [(27.5, 25.0), (28.0, 25.5)],
    })
    depth = _section("layer-depth", {"layers-3": [(20.0, 20.0)], "layers-6": [(21.0, 19.0)]})
    table, untested = claims_table([tolerance, depth])
    rows = table.set_index("effect")
    # MaskDINO drops 3 and 3 (box), DI 0.5 and 0.5: DI loses 2.5 less on both seeds
    box = rows.loc["AP box drop under loss-weight: MaskDINO's minus DI-MaskDINO's"]
    assert (box["mean"], box["ci_low"], box["ci_high"]) == pytest.approx((2.5, 2.5, 2.5))
    assert box["verdict"] == "agrees"
    assert "AP box drop under position-token: MaskDINO's minus DI-MaskDINO's" not in rows.index
    deeper = rows.loc["final AP box of layers-6 minus layers-3"]
    assert deeper["seeds"] == 1 and deeper["mean"] == 1.0
    assert deeper["verdict"] == "inconclusive (one seed)"
    assert [c.source for c in untested] == ["§1", "Tab. 4"]  # §1: no probe history
