"""``dimask layer-probe``: AP of every decoder layer of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dimaskdino.cli.errors import user_errors

out = Console(soft_wrap=True)


def parse_layers(text: str) -> list[int] | None:
    """``all`` -> None; ``0,3,6`` -> [0, 3, 6]."""
    from dimaskdino.config import ConfigError

    if text == "all":
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--layers takes 'all' or comma-separated layer numbers, "
                          f"not {text!r}") from None


def layer_probe(
    checkpoint: Annotated[Path, typer.Argument(help="A dimask checkpoint (.pth), or an "
                                               "official one with --official-config.")],
    data: Annotated[str | None, typer.Option(
        help="Dataset spec (default: the checkpoint's own dataset); its val split is used.")
    ] = None,
    official_config: Annotated[Path | None, typer.Option(
        help="The official YAML of an official MaskDINO / DI-MaskDINO checkpoint.")] = None,
    layers: Annotated[str, typer.Option(help="'all' or e.g. '0,3,6'.")] = "all",
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("probe"),
    backend: Annotated[str, typer.Option(help="hotcoco | faster | pycocotools")] = "hotcoco",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """AP_box and AP_mask of every decoder layer (layer 0 = the decoder's input queries)
    from one forward pass per batch; writes probe.csv, probe.json and per-layer detections."""
    with user_errors():
        from dimaskdino.analysis.probe import probe_layers, save_probe
        from dimaskdino.checkpoint import load_model
        from dimaskdino.config import ConfigError
        from dimaskdino.data.loader import validation_images
        from dimaskdino.engine.evaluator import check_backend

        check_backend(backend)
        chosen = parse_layers(layers)
        net, config = load_model(checkpoint, official_config)
        dataset, source = validation_images(config.data, data)
        try:
            result = probe_layers(net, dataset, chosen, config.data.test_batch_size, backend,
                                  progress=not quiet)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        save_probe(result, out_dir, {"checkpoint": str(checkpoint), "dataset": source.spec,
                                     "annotation_file": str(source.annotation_file)})
        out.print(probe_table(result))
        out.print(f"first-layer gap (AP_mask - AP_box): {result.imbalance['first_layer_gap']:+.1f}"
                  f", last-layer gap: {result.imbalance['last_layer_gap']:+.1f}")
        out.print(f"written: {out_dir / 'probe.csv'}, {out_dir / 'probe.json'}, "
                  f"{out_dir / 'detections'}/")


def probe_table(result) -> Table:
    """The probe as a rich table: one row per layer, box and mask AP side by side."""
    table = Table(title=f"layer probe: {result.table['model'].iloc[0]}")
    for column in ("layer", "AP box", "AP mask", "gap", "AP50 box", "AP50 mask"):
        table.add_column(column, justify="right")
    wide = result.table.pivot(index="layer", columns="task", values=["AP", "AP50"])
    for layer, row in wide.iterrows():
        table.add_row(str(layer), f"{row[('AP', 'box')]:.1f}", f"{row[('AP', 'mask')]:.1f}",
                      f"{row[('AP', 'mask')] - row[('AP', 'box')]:+.1f}",
                      f"{row[('AP50', 'box')]:.1f}", f"{row[('AP50', 'mask')]:.1f}")
    for _, row in result.stages.iterrows():
        table.add_row(f"DI {row['stage']}", f"{row['AP']:.1f}", "-", "-", f"{row['AP50']:.1f}",
                      "-")
    return table
