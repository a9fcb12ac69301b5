"""Turn the toolkit's user-facing errors into one line on stderr and exit code 1."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit to raise (code 1)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=1)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Report bad input (config, dataset, checkpoint, a diverging run) as one line."""
    from dimaskdino.checkpoint import CheckpointError
    from dimaskdino.config import ConfigError
    from dimaskdino.data.coco import DatasetError
    from dimaskdino.engine.trainer import TrainingError
    from dimaskdino.ops.build import ExtensionBuildError

    try:
        yield
    except (CheckpointError, ConfigError, DatasetError, TrainingError,
            ExtensionBuildError) as exc:
        raise fail(_one_line(str(exc))) from None


def _one_line(message: str) -> str:
    """A DataLoader worker re-raises errors with the worker's traceback in the message;
    keep the original error's own text (the last line, without its class name)."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return message.strip()
    last = lines[-1]
    head, sep, tail = last.partition(": ")
    return tail if sep and "." in head and " " not in head else last
