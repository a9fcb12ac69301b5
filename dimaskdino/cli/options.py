"""Arguments and options shared by the commands that read a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Checkpoint = Annotated[Path, typer.Argument(
    help="A dimask checkpoint (.pth), or an official one with --official-config.")]
OfficialConfig = Annotated[Path | None, typer.Option(
    help="The official YAML of an official MaskDINO / DI-MaskDINO checkpoint.")]
