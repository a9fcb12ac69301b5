"""``dimask run-ablation``: one of the paper's diagnostic studies, tracked in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dimaskdino.cli.errors import fail, user_errors
from dimaskdino.cli.options import PrecisionOption, study_jobs

console = Console(soft_wrap=True)


def plan_table(study, states) -> Table:
    """The dry-run table: one row per cell (states: :class:`CellState` per job); the cell's
    own overrides are shown without the ``model.predictor.`` prefix."""
    table = Table(title=f"{study.name} ({study.table}): {study.description}")
    for column in ("cell", "model", "overrides", "seeds", "finished", "paper AP box/mask"):
        table.add_column(column, no_wrap=column == "cell")
    for cell in study.cells:
        cell_jobs = [s for s in states if s.job.cell == cell.name]
        finished = sum(s.state == "finished" for s in cell_jobs)
        resume = sum(s.state == "resume" for s in cell_jobs)
        paper = ", ".join(f"{k} {box:.1f}/{mask:.1f}" for k, (box, mask) in cell.paper_ap.items())
        shown = [o.removeprefix("model.predictor.") for o in cell_jobs[0].job.cell_overrides]
        table.add_row(cell.name, cell.model, "\n".join(shown) or "-",
                      ",".join(str(s.job.seed) for s in cell_jobs),
                      f"{finished}/{len(cell_jobs)}" + (f" ({resume} to resume)" if resume else ""),
                      paper)
    return table


def summary_table(outcomes, tracking_uri: str) -> Table:
    """Per (cell, seed): status and AP box / AP mask at layer 0 and at the last layer."""
    from mlflow.tracking import MlflowClient

    from dimaskdino.experiments.tracking import layer_ap

    client = MlflowClient(tracking_uri)
    table = Table(title="summary")
    for column in ("cell", "seed", "status", "AP box L0", "AP mask L0", "last layer",
                   "AP box last", "AP mask last"):
        table.add_column(column, justify="left" if column in ("cell", "status") else "right",
                         no_wrap=column == "cell")
    for outcome in outcomes:
        row = [outcome.job.cell, str(outcome.job.seed), outcome.status]
        layers = layer_ap(client, outcome.run_id) if outcome.status != "failed" else None
        if layers is None or layers.empty:
            table.add_row(*row, "-", "-", "-", "-", "-")
            continue
        first, last = layers.iloc[0], layers.iloc[-1]
        table.add_row(*row, f"{first['ap_box']:.1f}", f"{first['ap_mask']:.1f}",
                      str(int(last["layer"])), f"{last['ap_box']:.1f}", f"{last['ap_mask']:.1f}")
    return table


def run_ablation(
    study: Annotated[str, typer.Argument(
        help="imbalance-tolerance | modules | guidance | gtg | selection-count | "
             "selection-amount | layer-depth")],
    scale: Annotated[str, typer.Option(help="tiny (synthetic, CPU) | small (--data, 5000 "
                                            "iterations) | paper (the paper's schedule)")
                     ] = "tiny",
    seeds: Annotated[int, typer.Option(help="Runs per cell, with solver.seed=0..N-1.")] = 1,
    data: Annotated[str | None, typer.Option(
        help="Dataset spec for the small and paper scales: coco:ROOT, bdd100k:ROOT (paper: "
             "these two), coco-json:ANN.json:IMAGE_DIR, synthetic.")] = None,
    backbone: Annotated[str, typer.Option(
        help="r50 | swinl (Swin-L, the swinl-* presets): small and paper scales.")] = "r50",
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI (default: sqlite:///OUT/mlflow.db).")] = None,
    out: Annotated[Path, typer.Option(
        help="Root folder: cells in OUT/STUDY/SCALE/CELL/seedS.")] = Path("runs/ablations"),
    executor: Annotated[str, typer.Option(
        help="local (here, one cell after the other) | slurm (one job array) | "
             "submitit-local (the job array as local processes)")] = "local",
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="A config override for every cell, e.g. --set solver.max_iter=300 "
                      "(repeatable; the cells' own switches win).", show_default=False)] = None,
    precision: PrecisionOption = "auto",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the cells and what is finished; run nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    account: Annotated[str | None, typer.Option(help="Slurm account.")] = None,
    gpus_per_node: Annotated[int, typer.Option(
        help="Slurm: GPUs per cell (one task each, one DDP group).")] = 1,
    cpus_per_task: Annotated[int, typer.Option(help="Slurm: CPUs per task.")] = 8,
    time: Annotated[int, typer.Option(help="Slurm: time limit per cell, minutes.")] = 2880,
    mem_gb: Annotated[int | None, typer.Option(help="Slurm: memory per node, GB.")] = None,
) -> None:
    """Run one of the paper's diagnostic studies: every cell trains, then the layer probe
    measures AP box / AP mask at every decoder layer; all of it goes to MLflow. Rerunning
    the same command skips finished cells and resumes interrupted ones."""
    with user_errors("rerun the same command to resume"):
        from dimaskdino.experiments.driver import (
            SlurmResources,
            check_executor,
            inspect_study,
            run_study,
        )
        from dimaskdino.experiments.lock import exclusive
        from dimaskdino.experiments.plan import plan_study
        from dimaskdino.experiments.registry import get_study
        from dimaskdino.experiments.tracking import check_store, default_tracking_uri, sqlite_uri

        chosen = get_study(study)
        check_executor(executor)
        sets = list(overrides or [])
        jobs = study_jobs(plan_study(chosen, scale, seeds, data, sets, out, backbone),
                          precision, None if quiet else console.print)
        check_store(tracking_uri or sqlite_uri(out), write=not dry_run)  # before the lock
        if dry_run:
            uri = tracking_uri or sqlite_uri(out)
            console.print(plan_table(chosen, inspect_study(jobs, uri)))
            console.print(f"scale {scale}, {len(jobs)} runs, tracking {uri}; nothing was run")
            return
        with exclusive(out, console.print):
            uri = tracking_uri or default_tracking_uri(out)
            states = inspect_study(jobs, uri)
            params = {"study": chosen.name, "scale": scale, "backbone": backbone,
                      "seeds": str(seeds), "data": data or "synthetic",
                      "set": " ".join(sets) or "-", "executor": executor, "out": str(out)}
            resources = SlurmResources(partition, gpus_per_node, cpus_per_task, time, mem_gb,
                                       account)
            outcomes = run_study(states, uri, out, executor, params, console.print,
                                 progress=not quiet, resources=resources)
        console.print(summary_table(outcomes, uri))
        console.print(f"MLflow: mlflow ui --backend-store-uri {uri}")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise fail(f"{len(failed)} of {len(outcomes)} cells failed "
                   f"({', '.join(o.job.label for o in failed)}); rerun the same command to "
                   "resume them")
