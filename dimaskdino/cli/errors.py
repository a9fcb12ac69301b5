"""Turn the toolkit's user-facing errors into one line on stderr and exit code 1, and an
interruption (Ctrl-C, SIGTERM) into one line and exit code ``128 + signal``."""

from __future__ import annotations

import contextlib
import errno
import signal
from collections.abc import Iterator

import typer
from rich.console import Console

from dimaskdino.errors import one_line

console = Console(stderr=True, soft_wrap=True)

# what an OSError says about the machine rather than about dimask: a user error
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit to raise (code 1)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=1)


@contextlib.contextmanager
def user_errors(resume_hint: str = "") -> Iterator[None]:
    """Report bad input (config, dataset, checkpoint, a diverging run, a full disk) as one
    line, exit 1; an interruption as one line (plus ``resume_hint``), exit 130 / 143.
    SIGTERM raises inside the block (as Ctrl-C does), so cleanup code runs."""
    from dimaskdino.checkpoint import CheckpointError
    from dimaskdino.config import ConfigError
    from dimaskdino.data.coco import DatasetError
    from dimaskdino.engine.interrupt import Interrupted, abort_on_signals
    from dimaskdino.engine.trainer import TrainingError
    from dimaskdino.experiments.lock import LockedError
    from dimaskdino.fileio import WriteError
    from dimaskdino.ops.build import ExtensionBuildError

    try:
        with abort_on_signals():
            yield
    except (CheckpointError, ConfigError, DatasetError, TrainingError, WriteError,
            ExtensionBuildError, LockedError) as exc:
        raise fail(one_line(exc)) from None
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}") from None
    except (Interrupted, KeyboardInterrupt) as exc:
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        hint = f"; {resume_hint}" if resume_hint and stop.checkpoint else ""
        console.print(f"[bold yellow]interrupted:[/] {stop}{hint}", highlight=False)
        raise typer.Exit(code=stop.exit_code) from None
