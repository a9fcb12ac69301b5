"""A study's table in the paper's layout: measured AP (mean, std and 95% t-interval over
seeds) beside the paper's, their difference and, for Tab. 3, each condition's change from
``standard``; and the paper's full layout, both datasets' columns (:func:`full_layout`)."""

from __future__ import annotations

import math

import pandas as pd
from pandas.io.formats.style import Styler

from dimaskdino.reports.definitions import DATASET_NAMES, layout, reference
from dimaskdino.reports.runs import Section
from dimaskdino.reports.stats import t_interval

METRICS = {"AP box": "final_ap_box", "AP mask": "final_ap_mask"}
FIELDS = ("mean", "std", "ci_low", "ci_high", "seeds", "paper", "diff")
CHANGES = ("change %", "paper change %")
MISSING = "n/a"
LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "✓": r"$\checkmark$"}


def numeric_table(section: Section) -> pd.DataFrame:
    """One row per cell (index: the layout's row labels, a MultiIndex for several levels);
    columns ``(group, metric, field)`` with group the layout's column group (level dropped
    when the study has none), metric ``AP box`` / ``AP mask`` and field mean, std, ci_low,
    ci_high (95% t-interval over seeds), seeds, paper, diff (mean - paper) and, with a
    reference row, ``change %`` / ``paper change %`` (relative to that row of the same
    group). Cells without runs have NaN measurements."""
    plan = layout(section.study)
    key = reference(section.study, section.dataset).key
    values = section.runs.groupby("cell")[list(METRICS.values())]
    data: dict[tuple, dict[tuple, float]] = {}
    for cell in section.study.cells:
        row = data.setdefault(plan.rows[cell.name], {})
        group = plan.groups.get(cell.name, "")
        paper = cell.paper_ap.get(key, (math.nan, math.nan))
        for (metric, column), expected in zip(METRICS.items(), paper):
            found = (values.get_group(cell.name)[column].tolist()
                     if cell.name in values.groups else [])
            mean, std, low, high = t_interval(found)
            fields = {"mean": mean, "std": std, "ci_low": low, "ci_high": high,
                      "seeds": len(found), "paper": expected, "diff": mean - expected}
            row.update({(group, metric, f): v for f, v in fields.items()})
    table = pd.DataFrame.from_dict(data, orient="index")
    table.index = (pd.MultiIndex.from_tuples(list(data), names=plan.index)
                   if len(plan.index) > 1 else pd.Index([r[0] for r in data], name=plan.index[0]))
    if plan.reference is not None:
        table = _add_changes(table, plan.reference)
    if not plan.groups:
        table = table.droplevel(0, axis=1)
    return table


def _add_changes(table: pd.DataFrame, reference_row: str) -> pd.DataFrame:
    """``table`` with ``change %`` and ``paper change %`` after each (group, metric)."""
    base = table[table.index.get_level_values(0) == reference_row].iloc[0]
    columns = {}
    for group, metric in dict.fromkeys((g, m) for g, m, _ in table.columns):
        columns.update({(group, metric, f): table[(group, metric, f)] for f in FIELDS})
        for name, source in zip(CHANGES, ("mean", "paper")):
            columns[(group, metric, name)] = 100 * (table[(group, metric, source)]
                                                    / base[(group, metric, source)] - 1)
    return pd.DataFrame(columns)


def _number(value: float, digits: int = 1) -> str:
    return MISSING if pd.isna(value) else f"{value:.{digits}f}"


def _measured(values: pd.Series) -> str:
    if values["seeds"] == 0:
        return "not run"
    text = _number(values["mean"])
    if values["seeds"] < 2:
        return f"{text} (1 seed)"
    return f"{text} ± {values['std']:.1f} [{values['ci_low']:.1f}, {values['ci_high']:.1f}]"


def _with_change(text: str, change: float, is_reference: bool) -> str:
    return text if is_reference or pd.isna(change) else f"{text} ({change:+.1f}%)"


def display_table(numeric: pd.DataFrame, paper_label: str) -> pd.DataFrame:
    """``numeric`` (from :func:`numeric_table`) as text in the paper's layout: per metric
    ``measured`` (mean ± std [95% t-interval]), ``paper_label`` and ``Δ`` (measured - paper); a
    ``change %`` is appended in brackets, as in Tab. 3."""
    prefixes = list(dict.fromkeys(c[:-1] for c in numeric.columns))
    has_changes = any(c[-1] == CHANGES[0] for c in numeric.columns)
    is_reference = [False] * len(numeric)
    if has_changes:
        base = numeric.index.get_level_values(0)
        is_reference = list(base == base[0])
    out = {}
    for prefix in prefixes:
        part = numeric[[(*prefix, f) for f in FIELDS]].droplevel(
            list(range(len(prefix))), axis=1)
        measured = part.apply(_measured, axis=1)
        paper = part["paper"].map(_number)
        if has_changes:
            changes = numeric[[(*prefix, c) for c in CHANGES]]
            measured = [_with_change(t, c, r) for t, c, r in
                        zip(measured, changes.iloc[:, 0], is_reference)]
            paper = [_with_change(t, c, r) for t, c, r in
                     zip(paper, changes.iloc[:, 1], is_reference)]
        out[(*prefix, "measured")] = list(measured)
        out[(*prefix, paper_label)] = list(paper)
        out[(*prefix, "Δ")] = [(MISSING if pd.isna(d) else f"{d:+.1f}") for d in part["diff"]]
    table = pd.DataFrame(out, index=numeric.index)
    table.columns = pd.MultiIndex.from_tuples(list(out))
    return table


def _colors(numeric: pd.DataFrame, shown: pd.DataFrame) -> pd.DataFrame:
    """CSS per shown cell: as in Tab. 3, a value with a change % is tinted red for a drop
    and green for a gain; no tint elsewhere."""
    css = pd.DataFrame("", index=shown.index, columns=shown.columns)
    for column in shown.columns:
        prefix, name = column[:-1], column[-1]
        change = (*prefix, CHANGES[0] if name == "measured" else CHANGES[1])
        if name == "Δ" or change not in numeric.columns:
            continue
        css[column] = [("" if pd.isna(v) or abs(v) < 1e-9 else
                        "background-color: #fbd5d0" if v < 0 else "background-color: #d5efd9")
                       for v in numeric[change]]
    return css


def styled(numeric: pd.DataFrame, shown: pd.DataFrame, caption: str) -> Styler:
    """The HTML / LaTeX table: ``shown`` with ``caption`` and tinted changes."""
    styler = shown.style.set_caption(caption).apply(
        lambda _: _colors(numeric, shown), axis=None)
    return styler.set_table_attributes('class="study-table"')


def latex(shown: pd.DataFrame, caption: str) -> str:
    """``shown`` as a LaTeX table (booktabs rules, needs amssymb; text escaped, ±, Δ and ✓
    as math symbols)."""
    styler = shown.style.format(escape="latex").format_index(escape="latex", axis=0)
    text = styler.format_index(escape="latex", axis=1).to_latex(
        caption=caption.replace("%", r"\%"), hrules=True, multicol_align="c",
        position_float="centering")
    for symbol, command in LATEX_SYMBOLS.items():
        text = text.replace(symbol, command)
    return text


def full_layout(section: Section) -> pd.DataFrame:
    """The study's table in the paper's full layout: per column group (Tab. 3: the model),
    per dataset the paper ran it on (BDD100K, COCO) and per metric, the paper's value and,
    beside the dataset the runs used, the measured one (mean ± std [95% t-interval]). Runs
    on another dataset (synthetic, custom) sit beside every dataset, in columns named
    ``measured (reference only)``."""
    plan = layout(section.study)
    kind = section.dataset.partition(":")[0]
    matched = reference(section.study, section.dataset).matched
    beside = [kind] if matched else list(section.study.datasets)
    label = "measured" if matched else "measured (reference only)"
    values = section.runs.groupby("cell")[list(METRICS.values())]
    data: dict[tuple, dict[tuple, str]] = {}
    for cell in section.study.cells:
        row = data.setdefault(plan.rows[cell.name], {})
        group = plan.groups.get(cell.name, "")
        for dataset in section.study.datasets:
            paper = cell.paper_ap.get(dataset, (math.nan, math.nan))
            for (metric, column), expected in zip(METRICS.items(), paper):
                key = (group, DATASET_NAMES[dataset], metric)
                row[(*key, "paper")] = _number(expected)
                if dataset in beside:
                    found = (values.get_group(cell.name)[column].tolist()
                             if cell.name in values.groups else [])
                    mean, std, low, high = t_interval(found)
                    row[(*key, label)] = _measured({"seeds": len(found), "mean": mean,
                                                    "std": std, "ci_low": low,
                                                    "ci_high": high})
    table = pd.DataFrame.from_dict(data, orient="index")
    table.index = (pd.MultiIndex.from_tuples(list(data), names=plan.index)
                   if len(plan.index) > 1 else pd.Index([r[0] for r in data], name=plan.index[0]))
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.droplevel(0, axis=1) if not plan.groups else table
