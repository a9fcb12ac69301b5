"""The progress bar of every long loop."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(disable: bool = False, stderr: bool = False) -> Progress:
    """The rich progress bar every long loop uses (bar, count, elapsed, ETA, then the task's
    ``status`` field), on stdout or ``stderr``."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    TextColumn("{task.fields[status]}"), disable=disable, transient=False,
                    console=Console(stderr=True) if stderr else None)
