"""``dimask layer-probe``: AP of every decoder layer of a checkpoint."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dimaskdino.cli.errors import user_errors
from dimaskdino.cli.options import Checkpoint, OfficialConfig, PrecisionOption

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
    checkpoint: Checkpoint,
    data: Annotated[str | None, typer.Option(
        help="Dataset spec (default: the checkpoint's own dataset); its val split is used. "
             "images:DIR (no annotations): consistency and detections only.")
    ] = None,
    official_config: OfficialConfig = None,
    layers: Annotated[str, typer.Option(help="'all' or e.g. '0,3,6'.")] = "all",
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("probe"),
    backend: Annotated[str, typer.Option(help="hotcoco | faster | pycocotools")] = "hotcoco",
    precision: PrecisionOption = "auto",
    checkpoints: Annotated[str | None, typer.Option(
        help="'all': CHECKPOINT is a run directory; probe each of its model_*.pth into "
             "probe_history.csv / .json, and the last one as a single probe.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """AP_box and AP_mask of every decoder layer (layer 0 = the decoder's input queries)
    from one forward pass per batch, their TIDE error decomposition and the box-mask
    consistency; writes probe.csv, errors.csv, consistency.csv, probe.json and per-layer
    detections (images:DIR, no annotations: consistency and detections only). With
    ``--checkpoints all`` on a run directory, also the history of every checkpoint."""
    with user_errors():
        from dimaskdino.analysis.probe import save_probe
        from dimaskdino.config import ConfigError
        from dimaskdino.engine.evaluator import check_backend
        from dimaskdino.engine.precision import check_precision

        check_backend(backend)
        check_precision(precision)
        chosen = parse_layers(layers)
        if checkpoints not in (None, "all"):
            raise ConfigError(f"--checkpoints takes 'all', not {checkpoints!r}")
        if checkpoint.is_dir() and checkpoints is None:
            raise ConfigError(f"{checkpoint} is a directory; give a checkpoint, or add "
                              "--checkpoints all to probe each of its model_*.pth")
        if checkpoints == "all" and not checkpoint.is_dir():
            raise ConfigError(f"--checkpoints all takes a run directory, not {checkpoint}")
        probe = functools.partial(_probe_checkpoint, data=data,
                                  official_config=official_config, layers=chosen,
                                  backend=backend, precision=precision, quiet=quiet)
        if checkpoints == "all":
            checkpoint, result, source = _probe_history(checkpoint, official_config, out_dir,
                                                        probe, quiet)
        else:
            result, source = probe(checkpoint)
        annotations = source.annotation_file
        save_probe(result, out_dir, {"checkpoint": str(checkpoint), "dataset": source.spec,
                                     "annotation_file": annotations and str(annotations)})
        out.print(probe_table(result))
        written = ["probe.json", "consistency.csv"]
        if result.has_ap:
            measures = result.imbalance
            out.print(f"first-layer gap (AP_mask - AP_box): {measures['first_layer_gap']:+.1f}"
                      f", last-layer gap: {measures['last_layer_gap']:+.1f}; Loc dAP box - "
                      f"mask: first {measures['first_layer_loc_box_minus_mask']:+.1f}, last "
                      f"{measures['last_layer_loc_box_minus_mask']:+.1f}")
            written[:0] = ["probe.csv", "errors.csv"]
        else:
            out.print(f"{source.spec} has no annotations: box-mask consistency and detections "
                      "only, no AP")
        if checkpoints == "all":
            written[:0] = ["probe_history.csv", "probe_history.json"]
        out.print(f"written: {', '.join(str(out_dir / name) for name in written)}, "
                  f"{out_dir / 'detections'}/")


def _probe_checkpoint(checkpoint: Path, *, data, official_config, layers, backend, precision,
                      quiet):
    """The layer probe of one checkpoint on its val split (or ``data``'s): (result,
    dataset source)."""
    from dimaskdino.analysis.probe import probe_layers
    from dimaskdino.config import ConfigError
    from dimaskdino.data.loader import validation_images
    from dimaskdino.engine.exported import load_inference_model

    net, config = load_inference_model(checkpoint, official_config)
    dataset, source = validation_images(config.data, data)
    try:
        result = probe_layers(net, dataset, layers, config.data.test_batch_size, backend,
                              progress=not quiet, precision=precision,
                              announce=None if quiet else out.print)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return result, source


def _probe_history(run_dir: Path, official_config, out_dir: Path, probe, quiet: bool):
    """Probe every checkpoint of ``run_dir`` into ``out_dir/probe_history.{csv,json}``;
    returns the last checkpoint, its result and the dataset source."""
    import pandas as pd

    from dimaskdino.analysis.probe_history import history_rows, run_checkpoints, write_history
    from dimaskdino.config import ConfigError

    rows = []
    for iteration, path in run_checkpoints(run_dir, official_config):
        if not quiet:
            out.print(f"iteration {iteration}: {path}")
        result, source = probe(path)
        if not result.has_ap:
            raise ConfigError(f"{source.spec} has no annotations: a probe history needs AP")
        rows.append(history_rows(result, iteration))
    write_history(out_dir, pd.concat(rows, ignore_index=True))
    return path, result, source


def _loc(result, layer) -> list[str]:
    """The Loc delta AP of box and mask at ``layer``."""
    errors = result.errors
    loc = errors[(errors["layer"] == layer) & (errors["error"] == "Loc")].set_index("task")
    return [f"{loc.loc[task, 'dAP']:.1f}" if task in loc.index else "-"
            for task in ("box", "mask")]


def probe_table(result) -> Table:
    """The probe as a rich table: one row per layer, box and mask AP side by side (and the
    box AP of the masks' tight boxes), TIDE's
    Loc delta AP of each and the box-mask consistency (mean IoU); without annotations the
    consistency only."""
    model = result.consistency["model"].iloc[0]
    table = Table(title=f"layer probe: {model}")
    consistency = result.consistency.set_index("layer")
    ap = ("AP box", "AP mask", "gap", "AP mask-box", "AP50 box", "AP50 mask", "Loc dAP box",
          "Loc dAP mask")
    for column in ("layer", *(ap if result.has_ap else ()), "box-mask IoU", "IoU < 0.5"):
        table.add_column(column, justify="right")
    for layer, row in consistency.iterrows():
        agreement = [f"{row['mean_iou']:.3f}", f"{row['frac_below_0.5']:.2f}"]
        if not result.has_ap:
            table.add_row(str(layer), *agreement)
            continue
        ap_row = result.table[result.table["layer"] == layer].set_index("task")
        box, mask = ap_row.loc["box"], ap_row.loc["mask"]
        table.add_row(str(layer), f"{box['AP']:.1f}", f"{mask['AP']:.1f}",
                      f"{mask['AP'] - box['AP']:+.1f}", f"{ap_row.loc['mask-box', 'AP']:.1f}",
                      f"{box['AP50']:.1f}",
                      f"{mask['AP50']:.1f}", *_loc(result, layer), *agreement)
    for _, row in result.stages.iterrows():
        table.add_row(f"DI {row['stage']}", f"{row['AP']:.1f}", "-", "-", "-",
                      f"{row['AP50']:.1f}", "-", "-", "-", "-", "-")
    return table
