"""The report of a real micro store: tables (measured = MLflow metrics, paper values from
the registry), figures, exported files, definitions and configuration."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from dimaskdino.experiments.registry import STUDIES, get_study
from dimaskdino.reports.definitions import switches
from tests.conftest import CELLS, SEEDS

pytestmark = pytest.mark.slow
KEY = "modules-tiny-synthetic"
ROWS = {"baseline": ("#1", "-", "-"), "di+bato": ("#4", "✓", "✓")}


def _measured(store) -> pd.DataFrame:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("modules").experiment_id
    runs = client.search_runs([experiment], "tags.role = 'cell'")
    frame = pd.DataFrame([{"cell": r.data.tags["cell"], "box": r.data.metrics["final_ap_box"],
                           "mask": r.data.metrics["final_ap_mask"]} for r in runs])
    assert len(frame) == len(CELLS) * SEEDS
    return frame.groupby("cell").agg(["mean", "std"])


def test_table_holds_measured_and_paper_values(report, store):
    html_path, files = report
    table = pd.read_csv(files / f"{KEY}-table.csv", header=[0, 1], index_col=[0, 1, 2])
    measured = _measured(store)
    assert len(table) == len(get_study("modules").cells)
    for name, index in ROWS.items():
        row, cell = table.loc[index], get_study("modules").cell(name)
        for metric, short, paper in zip(("AP box", "AP mask"), ("box", "mask"),
                                        cell.paper_ap["coco"]):
            assert row[(metric, "mean")] == pytest.approx(measured.loc[cell.name, (short, "mean")])
            assert row[(metric, "std")] == pytest.approx(measured.loc[cell.name, (short, "std")])
            assert row[(metric, "seeds")] == SEEDS
            assert row[(metric, "paper")] == paper
            assert row[(metric, "diff")] == pytest.approx(row[(metric, "mean")] - paper)
    not_run = table.loc[("#2", "✓", "-")]
    assert not_run[("AP box", "seeds")] == 0 and not_run[("AP box", "paper")] == 46.4
    page = html_path.read_text()
    assert "Tab. 4: modules" in page and "paper (COCO, reference only)" in page
    assert "not expected to match them" in page and "not run" in page
    mean = measured.loc["baseline", ("box", "mean")]
    std = measured.loc["baseline", ("box", "std")]
    assert f"{mean:.1f} ± {std:.1f}" in page


def test_figures_are_embedded_and_saved(report):
    html_path, files = report
    page = html_path.read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    stems = ["figure-1", "tide-errors", f"{KEY}-layer-ap", f"{KEY}-layer-gap", f"{KEY}-loss",
             f"{KEY}-consistency", f"{KEY}-gallery", f"{KEY}-training-ap",
             f"{KEY}-training-gap", f"{KEY}-training-gap-map"]
    assert len(images) == len(stems)
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    for stem in stems:
        assert (files / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
        assert "<svg" in (files / f"{stem}.svg").read_text()
    assert "MaskDINO (baseline)" in (files / "figure-1.svg").read_text()


def test_tables_are_exported_as_csv_and_latex(report):
    _, files = report
    tex = (files / f"{KEY}-table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\#1" in tex and r"$\checkmark$" in tex
    assert r"\toprule" in tex and "paper (COCO, reference only)" in tex


def test_definitions_and_configuration(report):
    page = report[0].read_text()
    for name in ("python", "torch", "mlflow", "dimaskdino"):
        assert f"<th>{name}</th>" in page
    for study in STUDIES.values():
        assert study.description.replace("'", "&#39;") in page
    terms = switches()
    assert len(terms) >= 8 and any(term == "GTG" for term, _, _ in terms)
    for term, tables, _ in terms:
        assert f"<b>{term}</b> ({tables})" in page
    assert "<code>loss.detection_scale=0.1</code>" in page
    assert "<code>solver.max_iter</code></td>\n<td class=\"left\"><code>4</code>" in page
    assert "Run configuration" in page and "model.predictor.first_selected_queries" in page
    assert re.search(r"seeds 0, 1 \(4 finished runs\)", page)
    # the environment table counts the seeds before naming them ("0" read as no seed)
    environment = page[page.index('<table class="runs">'):]
    environment = environment[:environment.index("</table>")]
    assert "<td>2 (seeds 0, 1)</td>" in environment
    # the test store's runs train from scratch (the micro experiment sets it)
    assert '<td class="left">from scratch</td>' in environment


def test_imbalance_over_training(report, store):
    """The section's learning-speed table (CSV) is learning_speed of each run's history as
    MLflow holds it, averaged over seeds; the page shows the section."""
    html_path, files = report
    page = html_path.read_text()
    assert f'id="{KEY}-over-training"' in page and 'class="speed-table"' in page
    table = pd.read_csv(files / f"{KEY}-learning-speed.csv")
    assert set(table["task"]) == {"box", "mask", "mask-box"}
    assert (table["seeds"] == SEEDS).all()
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("modules").experiment_id
    for run in client.search_runs([experiment], "tags.role = 'cell'"):
        final = [m.value for m in client.get_metric_history(run.info.run_id,
                                                            "probe_l0_ap_mask")]
        assert len(final) == 2  # probes at iterations 2 and 4 (period 2, 4 iterations)
    first = table[(table["layer"] == 0) & (table["task"] == "mask")].set_index("cell")
    runs = {(r.data.tags["cell"], int(r.data.tags["seed"])): r for r in client.search_runs(
        [experiment], "tags.role = 'cell'")}
    for cell in first.index:
        finals = [runs[(cell, s)].data.metrics["probe_l0_ap_mask"] for s in range(SEEDS)]
        assert first.loc[cell, "final_AP"] == pytest.approx(sum(finals) / SEEDS)


def test_claims_table_opens_the_report(report, store):
    """The claims the modules runs (baseline, di+bato; 2 seeds) can test, with their
    effects recomputed from the MLflow metrics and the t-interval of scipy."""
    html_path, files = report
    page = html_path.read_text()
    assert page.index('id="claims"') < page.index('id="environment"')
    assert "Rule: agrees: the 95% interval lies above 0" in page
    assert "Not tested (no runs of the cells they need):" in page
    assert "Tab. 3: DI-MaskDINO loses less under each constraint; Tab. 4:" in page
    claims = pd.read_csv(files / "claims.csv")
    assert list(claims["source"]) == ["Fig. 1", "Fig. 1", "§1", "Tab. 1-2", "Tab. 1-2"]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("modules").experiment_id
    runs = {(r.data.tags["cell"], int(r.data.tags["seed"])): r for r in client.search_runs(
        [experiment], "tags.role = 'cell'")}
    for row in claims.itertuples():
        if row.source == "§1":
            _check_mask_first(client, runs, row)
            continue
        assert row.seeds == SEEDS
        if row.source == "Fig. 1" and "minus" not in row.effect:
            per_seed = [_first_layer(client, runs[("baseline", s)], "mask")
                        - _first_layer(client, runs[("baseline", s)], "box")
                        for s in range(SEEDS)]
        elif row.source == "Tab. 1-2":
            task = "box" if "AP box" in row.effect else "mask"
            per_seed = [runs[("di+bato", s)].data.metrics[f"final_ap_{task}"]
                        - runs[("baseline", s)].data.metrics[f"final_ap_{task}"]
                        for s in range(SEEDS)]
        else:
            continue
        mean = sum(per_seed) / SEEDS
        half = stats.t.ppf(0.975, SEEDS - 1) * pd.Series(per_seed).std() / SEEDS ** 0.5
        assert (row.mean, row.ci_low, row.ci_high) == pytest.approx(
            (mean, mean - half, mean + half), abs=1e-9)
        expected = ("agrees" if mean - half > 0 else "disagrees" if mean + half < 0
                    else "inconclusive")
        assert row.verdict == expected and f">{expected}</td>" in page
    assert "in the paper's full layout" in page and "measured (reference only)" in page


def _half_way(client, run, task) -> int | None:
    """The first probed iteration at which layer 0's AP reaches half its final value, read
    from the run's MLflow history (None: it never does, or the final AP is 0)."""
    history = sorted((m.step, m.value) for m in client.get_metric_history(
        run.info.run_id, f"probe_l0_ap_{task}"))
    final = history[-1][1]
    return next((step for step, value in history if value >= final / 2), None) \
        if final > 0 else None


def _check_mask_first(client, runs, row) -> None:
    """§1's claim: per seed, box's half-way iteration minus mask's, of the MaskDINO cell."""
    per_seed = []
    for seed in range(SEEDS):
        box, mask = (_half_way(client, runs[("baseline", seed)], t) for t in ("box", "mask"))
        if box is not None and mask is not None:
            per_seed.append(box - mask)
    assert row.seeds == len(per_seed) and "MaskDINO (baseline)" in row.effect
    if len(per_seed) == SEEDS:
        assert row.mean == pytest.approx(sum(per_seed) / SEEDS)
    assert row.verdict.startswith("inconclusive") or len(per_seed) > 1


def _first_layer(client, run, task) -> float:
    history = client.get_metric_history(run.info.run_id, f"ap_{task}")
    return next(m.value for m in history if m.step == 0)
