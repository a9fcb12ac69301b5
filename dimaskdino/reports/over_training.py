"""The numbers of the report's "Imbalance over training" section, from the runs' probe
histories (:attr:`~dimaskdino.reports.runs.Section.history`): the learning-speed measures
of every run (:func:`~dimaskdino.analysis.probe_history.learning_speed`) and their means
over seeds."""

from __future__ import annotations

import pandas as pd

from dimaskdino.analysis.probe_history import learning_speed
from dimaskdino.reports.runs import Section

SPEED_COLUMNS = ["cell", "seed", "layer", "task", "final_AP", "iteration_50", "iteration_90",
                 "auc"]


def run_speeds(section: Section) -> tuple[pd.DataFrame, pd.Series]:
    """Per run of ``section`` with a history: its curves' measures (:data:`SPEED_COLUMNS`)
    and, indexed by (cell, seed), its first-layer gap (iterations from mask to box reaching
    50% of the final AP; NaN where either never does)."""
    rows, gaps = [], {}
    for (cell, seed), history in section.history.groupby(["cell", "seed"], sort=False):
        measures = learning_speed(history)
        rows += [{"cell": cell, "seed": seed, **curve} for curve in measures["curves"]]
        gap = measures["first_layer_gap_50"]
        gaps[(cell, seed)] = float("nan") if gap is None else float(gap)
    index = pd.MultiIndex.from_tuples(list(gaps), names=["cell", "seed"])
    return (pd.DataFrame(rows, columns=SPEED_COLUMNS).astype(
                {"iteration_50": float, "iteration_90": float, "auc": float}),
            pd.Series(list(gaps.values()), index=index, dtype=float))


def speed_table(section: Section) -> pd.DataFrame:
    """The learning-speed table: per (cell, layer, task) the means over seeds of the final
    AP, the iterations reaching 50% and 90% of it and the normalised area (NaN where no seed
    reached it), and the number of seeds."""
    speeds, _ = run_speeds(section)
    grouped = speeds.groupby(["cell", "layer", "task"], sort=False)
    table = grouped[["final_AP", "iteration_50", "iteration_90", "auc"]].mean()
    return table.assign(seeds=grouped["seed"].nunique()).reset_index()
