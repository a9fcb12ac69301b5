"""``write_report``: the studies' runs from MLflow as one HTML page, with its figures (PNG,
SVG) and tables (CSV, LaTeX) in the folder ``<page stem>_files`` beside it.

Everything is read and drawn before anything is written, so a report that cannot be made
(no store, no finished runs) leaves no file behind.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
from markupsafe import Markup
from pandas.io.formats.style import Styler

from dimaskdino import __version__
from dimaskdino.experiments.registry import STUDIES
from dimaskdino.fileio import atomic_write, atomic_write_text
from dimaskdino.reports import figures
from dimaskdino.reports.claims import RULE, claims_table
from dimaskdino.reports.definitions import DATASET_NAMES, overview, reference, switches
from dimaskdino.reports.gallery import section_gallery
from dimaskdino.reports.html import render
from dimaskdino.reports.over_training import run_speeds, speed_table
from dimaskdino.reports.runs import Section, load_sections
from dimaskdino.reports.tables import (
    display_table,
    full_layout,
    latex,
    numeric_table,
    styled,
)

PACKAGES = ("torch", "mlflow", "pandas", "matplotlib", "seaborn")


def versions() -> list[tuple[str, str]]:
    """(name, version) of python, dimaskdino and :data:`PACKAGES`."""
    found = [("python", platform.python_version()), ("dimaskdino", __version__)]
    for name in PACKAGES:
        try:
            found.append((name, version(name)))
        except PackageNotFoundError:
            found.append((name, "not installed"))
    return found


def _configuration(section: Section) -> tuple[list[tuple[str, str]], pd.DataFrame]:
    """The params every run shares (sorted (key, value)) and, per run, those that differ."""
    params = section.params.fillna("")
    varying = [c for c in params.columns if params[c].nunique() > 1]
    shared = sorted((c, str(params[c].iloc[0])) for c in params.columns if c not in varying)
    runs = section.runs.set_index("run_id")[["cell", "seed"]]
    return shared, runs.join(params[sorted(varying)]).reset_index(drop=True)


def _tables(section: Section) -> tuple[pd.DataFrame, Styler, str]:
    """The numeric table of ``section`` (CSV), its styled display (HTML) and the display
    as LaTeX."""
    ref = reference(section.study, section.dataset)
    numeric = numeric_table(section)
    shown = display_table(numeric, ref.label)
    caption = (f"{section.study.table} ({section.study.name}): measured AP (mean ± std over "
               f"seeds {', '.join(map(str, section.seeds))}) vs the {ref.label}")
    return numeric, styled(numeric, shown, caption), latex(shown, caption)


def _claims(sections: list[Section]) -> tuple[pd.DataFrame, dict]:
    """The claims table (CSV) and its template variables: the table as HTML (verdicts
    tinted), the rule, and the claims no run can test."""
    table, untested = claims_table(sections)
    tint = {"agrees": "background-color: #d5efd9", "disagrees": "background-color: #fbd5d0"}
    shown = table.assign(interval=[f"[{lo:+.2f}, {hi:+.2f}]" if n > 1 else
                                   "n/a (one seed)" if n else "n/a"
                                   for lo, hi, n in zip(table["ci_low"], table["ci_high"],
                                                        table["seeds"])])
    shown = shown[["source", "claim", "section", "effect", "seeds", "mean", "interval",
                   "verdict"]]
    styler = (shown.style.format({"mean": "{:+.2f}"}).hide(axis="index")
              .map(lambda v: tint.get(v, ""), subset=["verdict"])
              .set_table_attributes('class="claims-table"'))
    return table, {"claims_html": Markup(styler.set_uuid("claims").to_html()),
                   "claims_rule": RULE,
                   "untested": [f"{c.source}: {c.text}" for c in untested]}


def seeds_label(seeds: list[int]) -> str:
    """``[0]`` -> ``1 (seed 0)``, ``[0, 1]`` -> ``2 (seeds 0, 1)``: the count first, so that
    one seed numbered 0 does not read as no seed."""
    return f"{len(seeds)} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"


def _over_training(section: Section) -> tuple[dict | None, dict[str, str]]:
    """The "Imbalance over training" part of ``section`` (template variables: charts, the
    learning-speed table as HTML, the first-layer gaps) and its CSV file; None and no file
    for runs trained without probing."""
    if section.history.empty:
        return None, {}
    cells = figures.figure_one_cells(section)
    charts = [figures.training_curves(section)]
    if cells:
        charts += [figures.gap_over_training(section, cells), figures.gap_heatmap(section, cells)]
    table = speed_table(section)
    _, gaps = run_speeds(section)
    gap = gaps.groupby(level="cell", sort=False).agg(["mean", "std", "count"])
    shown = table.rename(columns={"final_AP": "final AP", "iteration_50": "iteration 50%",
                                  "iteration_90": "iteration 90%", "auc": "normalised AUC"})
    html = (shown.style.format({"final AP": "{:.1f}", "iteration 50%": "{:.0f}",
                                "iteration 90%": "{:.0f}", "normalised AUC": "{:.3f}"},
                               na_rep="not reached").hide(axis="index")
            .set_table_attributes('class="speed-table"').set_uuid(f"{section.key}-speed"))
    return ({"charts": [c for c in charts if c is not None],
             "speed_html": Markup(html.to_html()),
             "gaps": [(cell, row["mean"], row["std"], int(row["count"]))
                      for cell, row in gap.iterrows()]},
            {f"{section.key}-learning-speed.csv": table.to_csv(index=False)})


def backbone_start(params: pd.DataFrame) -> str:
    """What the runs' backbones started from (``model.backbone_weights``; a whole-model
    ``model.weights`` takes precedence), each start once."""
    def given(value) -> bool:
        return not pd.isna(value) and value not in ("", "None", "none")

    def start(row) -> str:
        if given(row.get("model.weights")):
            return f"model {row['model.weights']}"
        weights = row.get("model.backbone_weights")
        return str(weights) if given(weights) else "from scratch"

    return ", ".join(sorted({start(row) for _, row in params.iterrows()})) or "unknown"


def _section_context(section: Section, styler: Styler, charts: list) -> dict:
    """The template's variables for one section."""
    ref = reference(section.study, section.dataset)
    shared, varying = _configuration(section)
    counts = section.runs.groupby("cell")["seed"].apply(lambda s: ", ".join(map(str, s)))
    return {
        "key": section.key, "name": section.study.name, "table": section.study.table,
        "description": section.study.description, "scale": section.scale,
        "dataset": section.dataset, "seeds": ", ".join(map(str, section.seeds)),
        "seeds_run": seeds_label(section.seeds), "start": backbone_start(section.params),
        "runs": len(section.runs), "matched": ref.matched,
        "paper_dataset": DATASET_NAMES[ref.key],
        "table_html": Markup(styler.set_uuid(section.key).to_html()),
        "full_layout_html": Markup(full_layout(section).to_html(border=0)),
        "cells": [{"name": c.name, "model": c.model, "overrides": c.overrides,
                   "seeds": counts.get(c.name, "not run")} for c in section.study.cells],
        "charts": charts, "shared": shared,
        "varying_html": Markup(varying.to_html(index=False, border=0)),
    }


def write_report(tracking_uri: str, studies: list[str] | None, out: Path) -> Path:
    """Write the report of ``studies`` (every study with finished runs when None) from the
    MLflow store at ``tracking_uri`` to ``out`` (HTML, written atomically) and its files
    to ``<out stem>_files/``; returns ``out``. Raises ConfigError (unknown study) or
    :class:`~dimaskdino.reports.runs.ReportError` (nothing to report) before writing."""
    sections = load_sections(tracking_uri, studies)
    assets = out.parent / f"{out.stem}_files"
    files: dict[str, str | bytes] = {}
    charts, contexts = [], []
    chosen = next(((s, cells) for s in sections if (cells := figures.figure_one_cells(s))),
                  None)
    figure_one = figures.figure_one(*chosen) if chosen else None
    tide = figures.tide_bars(*chosen) if chosen else None
    claims, claims_context = _claims(sections)
    files["claims.csv"] = claims.to_csv(index=False)
    for section in sections:
        numeric, styler, tex = _tables(section)
        files[f"{section.key}-table.csv"] = numeric.to_csv()
        files[f"{section.key}-table.tex"] = tex
        section_charts = [draw(section) for draw in (figures.layer_curves, figures.layer_gap,
                                                     figures.loss_curves)]
        section_charts += [c for c in (figures.consistency_curve(section),) if c is not None]
        charts += section_charts
        contexts.append(_section_context(section, styler, section_charts))
        contexts[-1]["gallery"] = gallery = section_gallery(tracking_uri, section)
        charts += [gallery] if gallery else []
        contexts[-1]["over_training"], speed_files = over = _over_training(section)
        files.update(speed_files)
        charts += over[0]["charts"] if over[0] else []
    for chart in [*(c for c in (figure_one, tide) if c), *charts]:
        files[f"{chart.stem}.png"], files[f"{chart.stem}.svg"] = chart.png, chart.svg
    page = render({
        "title": "DI-MaskDINO diagnostic studies", "tracking_uri": tracking_uri,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "assets": assets.name, "versions": versions(), "figure_one": figure_one,
        "tide": tide, **claims_context,
        "sections": contexts, "overview": overview(), "switches": switches(),
        "studies": [(s.name, s.table, s.description) for s in STUDIES.values()],
    })
    assets.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        atomic_write(assets / name, content)
    atomic_write_text(out, page)
    return out
