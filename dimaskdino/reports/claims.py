"""The paper's claims that the studies' runs can test, each with its measured effect, a 95%
interval and a verdict.

Every claim is an effect that the paper says is positive, measured per seed as a
difference of final or per-layer AP between cells of one section, or (§1's claim on the
training dynamics) as the iterations between the first layer's mask and box AP reaching
half their final values in the probe history (paired by seed: the same
seed trains both cells). Its interval is the 95% Student-t interval of the mean over seeds
(:func:`~dimaskdino.reports.stats.t_interval`). The verdict rule, :data:`RULE`: *agrees*
when the whole interval is above 0, *disagrees* when it is below 0, *inconclusive* when it
contains 0. With one seed there is no interval: the runs keep no detections (only the
probe's tables, see :mod:`dimaskdino.experiments.tracking`), so no bootstrap over images can
stand in for it, and the verdict says *inconclusive (one seed)*; ``dimask compare`` of two
probes gives that bootstrap interval for one pair of checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from dimaskdino.reports.figures import MODEL_NAMES, figure_one_cells
from dimaskdino.reports.over_training import run_speeds
from dimaskdino.reports.runs import Section
from dimaskdino.reports.stats import t_interval

RULE = ("agrees: the 95% interval lies above 0; disagrees: below 0; inconclusive: it "
        "contains 0 (or one seed only)")
COLUMNS = ["source", "claim", "section", "effect", "seeds", "mean", "ci_low", "ci_high",
           "verdict"]
METRICS = {"box": "final_ap_box", "mask": "final_ap_mask"}

Effects = dict[str, pd.Series]  # effect description -> value per seed


def _final(section: Section, cell: str, task: str) -> pd.Series:
    runs = section.runs[section.runs["cell"] == cell]
    return runs.set_index("seed")[METRICS[task]].astype(float)


def _first_layer(section: Section, cell: str, task: str) -> pd.Series:
    layers = section.layers[(section.layers["cell"] == cell) & (section.layers["layer"] == 0)]
    return layers.set_index("seed")[f"ap_{task}"].astype(float)


def _ran(section: Section, *cells: str) -> bool:
    return set(cells) <= set(section.runs["cell"])


def _name(section: Section, cell: str) -> str:
    model = section.runs.loc[section.runs["cell"] == cell, "model"].iloc[0]
    return f"{MODEL_NAMES.get(model, model)} ({cell})"


def _first_layer_lag(section: Section) -> Effects | None:
    cells = [c.name for c in section.study.cells if c.model == "maskdino" and _ran(section, c.name)]
    if not cells:
        return None
    cell = cells[0]
    gap = _first_layer(section, cell, "mask") - _first_layer(section, cell, "box")
    return {f"layer-0 AP mask - AP box of {_name(section, cell)}": gap}


def _mask_first(section: Section) -> Effects | None:
    probed = set(section.history["cell"])
    cells = [c.name for c in section.study.cells if c.model == "maskdino" and c.name in probed]
    if not cells:
        return None
    _, gaps = run_speeds(section)
    return {f"iterations from layer-0 AP mask to AP box reaching 50% of their final AP, "
            f"{_name(section, cells[0])}": gaps.loc[cells[0]]}


def _narrows(section: Section) -> Effects | None:
    cells = figure_one_cells(section)
    if cells is None:
        return None
    gaps = [_first_layer(section, c, "mask") - _first_layer(section, c, "box") for c in cells]
    return {f"layer-0 gap (AP mask - AP box) of {_name(section, cells[0])} minus that of "
            f"{_name(section, cells[1])}": gaps[0] - gaps[1]}


def _final_exceeds(section: Section) -> Effects | None:
    cells = figure_one_cells(section)
    if cells is None:
        return None
    return {f"final AP {task} of {_name(section, cells[1])} minus {_name(section, cells[0])}":
            _final(section, cells[1], task) - _final(section, cells[0], task)
            for task in METRICS}


def _loses_less(section: Section) -> Effects | None:
    effects = {}
    for constraint in ("loss-weight", "position-token"):
        if not _ran(section, *(f"{m}-{c}" for m in ("maskdino", "di")
                               for c in ("standard", constraint))):
            continue
        for task in METRICS:
            drops = [_final(section, f"{m}-standard", task)
                     - _final(section, f"{m}-{constraint}", task) for m in ("maskdino", "di")]
            effects[f"AP {task} drop under {constraint}: MaskDINO's minus DI-MaskDINO's"] = (
                drops[0] - drops[1])
    return effects or None


def _differences(pairs: list[tuple[str, str]]) -> Callable[[Section], Effects | None]:
    """Final AP (box, mask) of the first cell of each pair minus that of the second."""
    def measure(section: Section) -> Effects | None:
        effects = {f"final AP {task} of {better} minus {base}":
                   _final(section, better, task) - _final(section, base, task)
                   for better, base in pairs if _ran(section, better, base) for task in METRICS}
        return effects or None
    return measure


@dataclass(frozen=True)
class Claim:
    """A claim of the paper: where it is made, what it says, the study whose runs test it
    (None: any section holding a MaskDINO and a DI-MaskDINO cell) and its effects."""

    source: str
    text: str
    study: str | None
    measure: Callable[[Section], Effects | None]


CLAIMS = (
    Claim("Fig. 1", "MaskDINO's first-layer AP box < AP mask", None, _first_layer_lag),
    Claim("Fig. 1", "DI-MaskDINO narrows the first-layer gap", None, _narrows),
    Claim("§1", "at the first layer, segmentation reaches 50% of its final AP before "
          "detection does", None, _mask_first),
    Claim("Tab. 1-2", "DI-MaskDINO's final AP box and mask exceed MaskDINO's", None,
          _final_exceeds),
    Claim("Tab. 3", "DI-MaskDINO loses less under each constraint", "imbalance-tolerance",
          _loses_less),
    Claim("Tab. 4", "DI and BATO each help", "modules",
          _differences([("di", "baseline"), ("bato", "baseline")])),
    Claim("Tab. 9", "6 layers >= 3 layers", "layer-depth",
          _differences([("layers-6", "layers-3")])),
)


def verdict(low: float, high: float, seeds: int) -> str:
    """:data:`RULE` applied to the interval ``[low, high]`` of ``seeds`` seeds."""
    if seeds == 0:
        return "inconclusive (no seed measured it)"
    if seeds < 2:
        return "inconclusive (one seed)"
    if low > 0:
        return "agrees"
    if high < 0:
        return "disagrees"
    return "inconclusive"


def claims_table(sections: list[Section]) -> tuple[pd.DataFrame, list[Claim]]:
    """One row per (claim, section, effect) that the runs can test (:data:`COLUMNS`), and
    the claims no section can test."""
    rows, untested = [], []
    for claim in CLAIMS:
        found = False
        for section in sections:
            if claim.study not in (None, section.study.name):
                continue
            for effect, per_seed in (claim.measure(section) or {}).items():
                values = per_seed.dropna().tolist()
                mean, _, low, high = t_interval(values)
                rows.append({"source": claim.source, "claim": claim.text, "section": section.key,
                             "effect": effect, "seeds": len(values), "mean": mean,
                             "ci_low": low, "ci_high": high,
                             "verdict": verdict(low, high, len(values))})
                found = True
        if not found:
            untested.append(claim)
    return pd.DataFrame(rows, columns=COLUMNS), untested
