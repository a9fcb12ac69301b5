"""``dimask demo``: the paper's Figure 1 at tiny scale, in minutes on a CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dimaskdino.cli.errors import fail, user_errors
from dimaskdino.cli.options import PrecisionOption, study_jobs

console = Console(soft_wrap=True)

# Figure 1 compares MaskDINO with DI-MaskDINO: the ``modules`` study's first and last cells
FIGURE_1_CELLS = ("baseline", "di+bato")
# iterations of batch 4 per model: the backbone pretrained (once) and both tiny models
# trained and probed within 10 minutes on two cores
ITERATIONS = 1200


def figure_1_table(rows: list[tuple[str, dict, dict]]) -> Table:
    """``rows``: (model, first-layer {"ap_box", "ap_mask"}, last-layer {...})."""
    table = Table(title="Figure 1 (tiny scale): AP at the first (L0) and the last decoder layer; "
                        "gap = AP mask - AP box")
    table.add_column("model", no_wrap=True)
    for column in ("L0 AP box", "L0 AP mask", "L0 gap", "last AP box", "last AP mask",
                   "last gap"):
        table.add_column(column, justify="right")
    for model, first, last in rows:
        cells = []
        for layer in (first, last):
            cells += [f"{layer['ap_box']:.1f}", f"{layer['ap_mask']:.1f}",
                      f"{layer['ap_mask'] - layer['ap_box']:+.1f}"]
        table.add_row(model, *cells)
    return table


def demo(
    out: Annotated[Path, typer.Option(help="Where the runs and the MLflow store go.")
                   ] = Path("runs/demo"),
    iterations: Annotated[int, typer.Option(
        help="Training iterations per model (learning rate dropped at 5/6 of them).")
    ] = ITERATIONS,
    precision: PrecisionOption = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Train tiny MaskDINO and DI-MaskDINO on the synthetic data, probe every layer of both,
    print the detection-segmentation gap at the first and the last decoder layer and write
    the HTML report (OUT/report.html)."""
    with user_errors("rerun `dimask demo` to resume"):
        from mlflow.tracking import MlflowClient

        from dimaskdino.config import ConfigError
        from dimaskdino.experiments.driver import inspect_study, run_study
        from dimaskdino.experiments.lock import exclusive
        from dimaskdino.experiments.plan import plan_study
        from dimaskdino.experiments.registry import get_study
        from dimaskdino.experiments.scales import tiny_schedule
        from dimaskdino.experiments.tracking import default_tracking_uri, layer_ap
        from dimaskdino.reports import write_report

        if iterations < 1:
            raise ConfigError(f"--iterations must be positive, not {iterations}")
        modules = get_study("modules")
        study = dataclasses.replace(modules, cells=tuple(
            modules.cell(name) for name in FIGURE_1_CELLS))
        jobs = study_jobs(plan_study(study, "tiny", 1, None, list(tiny_schedule(iterations)),
                                     out), precision,
                          None if quiet else console.print)
        with exclusive(out, console.print):
            uri = default_tracking_uri(out)
            outcomes = run_study(inspect_study(jobs, uri), uri, out, "local",
                                 {"study": study.name, "scale": "tiny", "demo": "figure-1"},
                                 console.print, progress=not quiet)
        failed = [o.job.label for o in outcomes if o.status == "failed"]
        if failed:
            raise fail(f"demo cells failed: {', '.join(failed)}; rerun `dimask demo` to "
                       "resume them")
        client = MlflowClient(uri)
        rows = []
        for outcome in outcomes:
            layers = layer_ap(client, outcome.run_id)
            rows.append((outcome.job.model, layers.iloc[0], layers.iloc[-1]))
        console.print(figure_1_table(rows))
        page = write_report(uri, [study.name], out / "report.html")
        console.print(f"runs: {out}; MLflow: mlflow ui --backend-store-uri {uri}")
        console.print(f"report: {page}")
