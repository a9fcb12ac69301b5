"""The ``dimask`` typer app: one function per command, errors as one clear line."""

from __future__ import annotations

from typing import Annotated

import typer

from dimaskdino import __version__
from dimaskdino.cli.compare import compare
from dimaskdino.cli.data import data_app
from dimaskdino.cli.demo import demo
from dimaskdino.cli.errors import fail
from dimaskdino.cli.export import export
from dimaskdino.cli.pretrain import pretrain
from dimaskdino.cli.probe import layer_probe
from dimaskdino.cli.report import report
from dimaskdino.cli.studies import run_ablation
from dimaskdino.cli.training import evaluate, train
from dimaskdino.cli.visualize import visualize

app = typer.Typer(
    name="dimask",
    help="DI-MaskDINO and MaskDINO: train, probe layer by layer, run the paper's studies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("pretrain")(pretrain)
app.command("train")(train)
app.command("eval")(evaluate)
app.command("layer-probe")(layer_probe)
app.command("compare")(compare)
app.command("visualize")(visualize)
app.command("run-ablation")(run_ablation)
app.command("report")(report)
app.command("demo")(demo)
app.command("export")(export)
app.add_typer(data_app, name="data")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"dimask {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """DI-MaskDINO and MaskDINO: train, probe layer by layer, run the paper's studies."""


@app.command("build-ops")
def build_ops(
    cuda: Annotated[bool, typer.Option("--cuda", help="Also compile the CUDA kernel.")] = False,
    archs: Annotated[
        str | None,
        typer.Option(help="CUDA architectures, e.g. '8.0;9.0' (default: the visible GPUs, "
                          "else 8.0;9.0)."),
    ] = None,
) -> None:
    """Compile the C++ kernels (deformable attention, mask encoder) now instead of on first
    use."""
    from dimaskdino.ops.build import (
        ExtensionBuildError,
        load_cpu_extension,
        load_cuda_extension,
        load_mask_extension,
    )

    try:
        typer.echo(f"CPU kernel:  {load_cpu_extension().__file__}")
        typer.echo(f"mask encoder: {load_mask_extension().__file__}")
        if cuda:
            typer.echo(f"CUDA kernel: {load_cuda_extension(archs).__file__}")
    except ExtensionBuildError as exc:
        raise fail(str(exc)) from None


def main() -> None:
    """Console-script entry point."""
    app()
