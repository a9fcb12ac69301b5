"""``dimask report``: the studies' MLflow runs as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dimaskdino.cli.errors import fail, user_errors

DEFAULT_ROOT = Path("runs/ablations")


def report(
    study: Annotated[str | None, typer.Option(
        help="One study: imbalance-tolerance | modules | guidance | gtg | selection-count | "
             "selection-amount | layer-depth.")] = None,
    all_: Annotated[bool, typer.Option(
        "--all", help="Every study with finished runs in the store.")] = False,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI (default: sqlite:///runs/ablations/mlflow.db).")] = None,
    out: Annotated[Path, typer.Option(
        help="The HTML page; figures and tables go to OUT_STEM_files/ beside it.")
    ] = DEFAULT_ROOT / "report.html",
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing on success.")] = False,
) -> None:
    """Write the paper's tables (measured beside the paper's numbers), Figure 1-style
    first / last layer bars, per-layer AP curves, training curves and the run configuration
    of finished study runs as one HTML file."""
    if (study is None) == (not all_):
        raise fail("give --study NAME or --all (not both)" if study else
                   "give --study NAME or --all")
    with user_errors():
        from dimaskdino.experiments.tracking import sqlite_uri
        from dimaskdino.reports import ReportError, write_report

        uri = tracking_uri or sqlite_uri(DEFAULT_ROOT)
        try:
            written = write_report(uri, [study] if study else None, out)
        except ReportError as exc:
            raise fail(str(exc)) from None
    if not quiet:
        typer.echo(f"report: {written} (figures and tables in {written.stem}_files/)")
