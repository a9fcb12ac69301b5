"""Tables without a store: Tab. 3's tolerance percentages and the paper column chosen."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

from dimaskdino.experiments.registry import get_study
from dimaskdino.reports.definitions import reference
from dimaskdino.reports.runs import Section
from dimaskdino.reports.tables import display_table, full_layout, numeric_table

TOLERANCE = get_study("imbalance-tolerance")
PAPER_CHANGES = {  # Tab. 3: (MaskDINO box, mask, DI-MaskDINO box, mask)
    "loss weight constraint": (-10.2, -3.0, -2.9, 1.2),
    "position token constraint": (-21.8, -7.6, -14.7, -4.8),
}


def _section(dataset: str) -> Section:
    rows = [{"run_id": f"{c.name}{s}", "cell": c.name, "seed": s, "model": c.model,
             "scale": "paper", "dataset": dataset, "final_ap_box": 20.0 + i + s,
             "final_ap_mask": 10.0 + i - s} for i, c in enumerate(TOLERANCE.cells)
            for s in (0, 1)]
    empty = pd.DataFrame()
    return Section(TOLERANCE, "paper", dataset, pd.DataFrame(rows), empty, empty, empty)


def test_tolerance_percentages_as_in_table_3():
    table = numeric_table(_section("bdd100k:datasets/bdd100k"))
    assert list(table.columns.get_level_values(0).unique()) == [
        "MaskDINO", "DI-MaskDINO (DI only)"]
    for condition, expected in PAPER_CHANGES.items():
        row = table.loc[condition]
        got = [row[(g, m, "paper change %")] for g in ("MaskDINO", "DI-MaskDINO (DI only)")
               for m in ("AP box", "AP mask")]
        assert [round(v, 1) for v in got] == list(expected)
    # measured: box 20.5 + i, mask 9.5 + i for cell i; MaskDINO cells 0-2, DI cells 3-5
    row = table.loc["loss weight constraint"]
    assert row[("MaskDINO", "AP box", "mean")] == 21.5
    assert row[("MaskDINO", "AP box", "change %")] == pytest.approx(100 * (21.5 / 20.5 - 1))
    assert row[("DI-MaskDINO (DI only)", "AP mask", "change %")] == pytest.approx(
        100 * (13.5 / 12.5 - 1))
    assert row[("MaskDINO", "AP box", "diff")] == pytest.approx(21.5 - 24.7)
    shown = display_table(table, "paper (BDD100K)")
    assert shown.loc["loss weight constraint", ("MaskDINO", "AP box", "paper (BDD100K)")] == (
        "24.7 (-10.2%)")
    assert shown.loc["standard", ("MaskDINO", "AP box", "paper (BDD100K)")] == "27.5"
    # two seeds (20 and 21): the 95% t-interval is 20.5 ± t(0.975, 1) * std / sqrt(2)
    half = stats.t.ppf(0.975, 1) * pd.Series([20.0, 21.0]).std() / 2 ** 0.5
    assert row[("MaskDINO", "AP box", "ci_high")] == pytest.approx(21.5 + half)
    assert shown.loc["standard", ("MaskDINO", "AP box", "measured")] == (
        f"20.5 ± 0.7 [{20.5 - half:.1f}, {20.5 + half:.1f}]")


def test_full_layout_puts_measured_beside_the_dataset_it_ran_on():
    modules = get_study("modules")
    rows = [{"run_id": f"{c.name}{s}", "cell": c.name, "seed": s, "model": c.model,
             "scale": "paper", "dataset": "coco:/data/coco", "final_ap_box": 40.0 + s,
             "final_ap_mask": 30.0} for c in modules.cells[:2] for s in (0, 1, 2)]
    empty = pd.DataFrame()
    table = full_layout(Section(modules, "paper", "coco:/data/coco", pd.DataFrame(rows),
                                empty, empty, empty))
    assert list(table.columns) == [("BDD100K", "AP box", "paper"), ("BDD100K", "AP mask", "paper"),
                                   ("COCO", "AP box", "paper"), ("COCO", "AP box", "measured"),
                                   ("COCO", "AP mask", "paper"), ("COCO", "AP mask", "measured")]
    half = stats.t.ppf(0.975, 2) * 1.0 / 3 ** 0.5
    assert table.loc[("#1", "-", "-"), ("COCO", "AP box", "measured")] == (
        f"41.0 ± 1.0 [{41 - half:.1f}, {41 + half:.1f}]")
    assert table.loc[("#1", "-", "-"), ("BDD100K", "AP box", "paper")] == "27.8"
    assert table.loc[("#3", "-", "✓"), ("COCO", "AP mask", "measured")] == "not run"
    # synthetic runs: beside both datasets, as a reference only
    synthetic = full_layout(_section("synthetic"))
    assert ("MaskDINO", "BDD100K", "AP box", "measured (reference only)") in synthetic.columns
    assert synthetic.loc["standard", ("MaskDINO", "BDD100K", "AP box", "paper")] == "27.5"


@pytest.mark.parametrize("dataset, key, matched", [
    ("bdd100k:datasets/bdd100k", "bdd100k", True), ("coco:/data/coco", "coco", True),
    ("synthetic", "coco", False), ("coco-json:a.json:images", "coco", False),
])
def test_paper_column_follows_the_dataset(dataset, key, matched):
    ref = reference(get_study("modules"), dataset)
    assert (ref.key, ref.matched) == (key, matched)
    assert ("reference only" in ref.label) is not matched
    assert reference(TOLERANCE, "synthetic").key == "bdd100k"


def test_backbone_start_names_each_start_once():
    import pandas as pd

    from dimaskdino.reports.build import backbone_start

    params = pd.DataFrame({"model.backbone_weights": ["pretrained:tiny", "pretrained:tiny",
                                                      "none", None],
                           "model.weights": [None, None, None, "run/model_final.pth"]})
    assert backbone_start(params) == ("from scratch, model run/model_final.pth, "
                                      "pretrained:tiny")
