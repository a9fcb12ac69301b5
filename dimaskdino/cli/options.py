"""Arguments and options shared by the commands that read a checkpoint or predict."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

Checkpoint = Annotated[Path, typer.Argument(
    help="A dimask checkpoint (.pth), an official one with --official-config, or (eval, "
         "layer-probe) a model written by dimask export (.onnx).")]
OfficialConfig = Annotated[Path | None, typer.Option(
    help="The official YAML of an official MaskDINO / DI-MaskDINO checkpoint.")]
PrecisionOption = Annotated[str, typer.Option(
    "--precision", help="Inference precision: auto | fp32 | bf16 (auto: bf16 on a CPU with "
                        "AMX-BF16 or AVX512_BF16 for the models where it is faster, else "
                        "fp32).")]


def study_jobs(jobs: list, precision: str, echo: Callable[[str], None] | None) -> list:
    """A study's cell jobs with the probe's ``precision`` (checked; resolved for the first
    cell's model on this machine's device, said in one line through ``echo`` if any)."""
    import dataclasses

    import torch

    from dimaskdino.engine.precision import check_precision, resolve_precision

    check_precision(precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mode = resolve_precision(precision, device, jobs[0].config().model)
    if echo is not None:
        echo(f"layer probe {mode.describe()}; training: solver.precision")
    return [dataclasses.replace(job, precision=precision) for job in jobs]

