"""``dimask compare``: two layer probes, layer by layer, with paired bootstrap intervals."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dimaskdino.cli.errors import fail, user_errors

out = Console(soft_wrap=True)


def compare(
    probe_a: Annotated[Path, typer.Argument(help="A layer-probe output folder (A).")],
    probe_b: Annotated[Path, typer.Argument(help="Another, on the same annotation file (B).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where compare.csv goes.")] = Path(
        "compare"),
    bootstrap: Annotated[int, typer.Option(
        help="Bootstrap replicates (images drawn with replacement).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap draws.")] = 0,
) -> None:
    """Per layer and task AP of A and B, delta = B - A with a paired bootstrap 95% interval
    over images; also the gap AP mask - AP box of each and its difference. Writes
    OUT/compare.csv and prints the table; when both probed runs have a probe history
    (probe_history.json), also their learning speeds side by side (OUT/compare_speed.csv)."""
    if bootstrap < 1:
        raise fail("--bootstrap takes a positive number of replicates")
    with user_errors():
        from dimaskdino.analysis.compare import ProbeFolder, compare_probes, compare_speeds
        from dimaskdino.fileio import atomic_write_text

        a, b = ProbeFolder.read(probe_a), ProbeFolder.read(probe_b)
        table = compare_probes(a, b, bootstrap, seed)
        atomic_write_text(out_dir / "compare.csv", table.to_csv(index=False))
        histories = a.learning_speed(), b.learning_speed()
        speeds = compare_speeds(*histories) if None not in histories else None
        written = [out_dir / "compare.csv"]
        if speeds is not None:
            written.append(out_dir / "compare_speed.csv")
            atomic_write_text(written[-1], speeds.to_csv(index=False))
    out.print(compare_table(table, probe_a, probe_b, bootstrap))
    if speeds is not None:
        out.print(speed_table(speeds))
    out.print(f"written: {', '.join(map(str, written))}")


def compare_table(table, probe_a: Path, probe_b: Path, bootstrap: int) -> Table:
    """The comparison as a rich table, one row per (layer, task)."""
    shown = Table(title=f"A = {probe_a}, B = {probe_b}: delta = B - A, paired bootstrap 95% "
                        f"interval ({bootstrap} replicates)")
    for column in ("layer", "task", "AP A", "AP B", "delta", "95% interval"):
        shown.add_column(column, justify="left" if column == "task" else "right")
    for row in table.itertuples():
        shown.add_row(str(row.layer), "gap (mask - box)" if row.task == "gap" else row.task,
                      f"{row.ap_a:.2f}", f"{row.ap_b:.2f}", f"{row.delta:+.2f}",
                      f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]")
    return shown


def speed_table(speeds) -> Table:
    """The learning-speed comparison as a rich table, one row per (layer, task, measure)."""
    shown = Table(title="learning speed over training (probe histories): iterations to 50% / "
                        "90% of the final AP, normalised AUC; first-layer gap = box minus mask "
                        "iteration to 50% (positive: detection slower)")
    for column in ("layer", "task", "measure", "A", "B", "B - A"):
        shown.add_column(column, justify="left" if column in ("task", "measure") else "right")
    for row in speeds.itertuples():
        digits = 3 if row.measure == "auc" else 0
        shown.add_row(str(row.layer), row.task, row.measure,
                      *(f"{v:.{digits}f}" if not math.isnan(v) else "not reached"
                        for v in (row.a, row.b)),
                      f"{row.delta:+.{digits}f}" if not math.isnan(row.delta) else "-")
    return shown
