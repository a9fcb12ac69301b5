"""``dimask train`` and ``dimask eval``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dimaskdino.cli.errors import user_errors
from dimaskdino.cli.options import Checkpoint, OfficialConfig, PrecisionOption
from dimaskdino.config.presets import MODELS, PRESETS

out = Console(soft_wrap=True)


def metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    """AP, AP50, ... of ``{"bbox": {...}, "segm": {...}}`` as a rich table."""
    from dimaskdino.engine.evaluator import METRICS

    table = Table(title=title)
    table.add_column("task")
    for name in METRICS:
        table.add_column(name, justify="right")
    for iou, task in (("bbox", "box"), ("segm", "mask")):
        table.add_row(task, *(f"{metrics[iou][m]:.1f}" for m in METRICS))
    return table


def train(
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Config overrides, e.g. solver.max_iter=300 model.predictor.dec_layers=6",
        show_default=False)] = None,
    preset: Annotated[str, typer.Option(help="The experiment preset: " + ", ".join(PRESETS)
                                        + ".")] = "tiny",
    model: Annotated[str, typer.Option(help=" | ".join(MODELS))] = "dimaskdino",
    data: Annotated[str | None, typer.Option(
        help="Dataset spec: synthetic, coco:ROOT, bdd100k:ROOT, coco-json:ANN.json:IMAGE_DIR "
             "(default: the preset's; same as data.dataset=...).")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Run directory (default: runs/PRESET-MODEL).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from the run directory's last checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    init_from: Annotated[Path | None, typer.Option(
        help="Start from this checkpoint's whole model (dimask, or official with "
             "--official-config) and architecture; the class count is the dataset's, the "
             "class heads are re-initialised where it differs.")] = None,
    official_config: Annotated[Path | None, typer.Option(
        help="The official YAML of an official checkpoint given to --init-from.")] = None,
) -> None:
    """Train MaskDINO or DI-MaskDINO (launch with torchrun for several processes). Ctrl-C
    or SIGTERM ends the current iteration with a checkpoint (exit 130 / 143); --resume
    continues from it."""
    with user_errors("continue with the same command and --resume"):
        from dimaskdino.config import ConfigError, apply_overrides
        from dimaskdino.config import preset as make_preset
        from dimaskdino.engine import distributed
        from dimaskdino.engine.initialization import init_from_checkpoint
        from dimaskdino.engine.trainer import Trainer

        config = make_preset(preset, model)
        if data is not None:
            config = replace(config, data=replace(config.data, dataset=data))
        config = apply_overrides(config, overrides or [])
        if official_config is not None and init_from is None:
            raise ConfigError("--official-config is the YAML of an official checkpoint "
                              "given to --init-from")
        if init_from is not None:
            config = init_from_checkpoint(config, init_from, official_config, overrides or [])
        directory = out_dir or Path("runs") / f"{preset}-{model}"
        try:
            result = Trainer(config, directory, resume=resume, progress=not quiet).run()
        finally:
            distributed.shutdown()
        if distributed.is_main_process():
            out.print(metrics_table(f"{config.model.name} ({preset}), iteration "
                                    f"{result.iteration}", result.metrics))
            out.print(f"run directory: {result.output_dir}")


def evaluate(
    checkpoint: Checkpoint,
    data: Annotated[str | None, typer.Option(
        help="Dataset spec (default: the checkpoint's own dataset).")] = None,
    official_config: OfficialConfig = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Also write DIR/eval.json: {\"bbox\": {\"AP\": ..}, \"segm\": {..}}.")
    ] = None,
    backend: Annotated[str, typer.Option(help="hotcoco | faster | pycocotools")] = "hotcoco",
    precision: PrecisionOption = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Box and mask AP of a checkpoint's final predictions on a validation split."""
    with user_errors():
        from dimaskdino.data.loader import validation_images
        from dimaskdino.engine.evaluator import check_backend, evaluate_model
        from dimaskdino.engine.exported import load_inference_model
        from dimaskdino.engine.precision import check_precision
        from dimaskdino.fileio import atomic_write_text

        check_backend(backend)
        check_precision(precision)
        net, config = load_inference_model(checkpoint, official_config)
        dataset, _ = validation_images(config.data, data)
        metrics = evaluate_model(net, dataset, config.data.test_batch_size, backend,
                                 progress=not quiet, precision=precision,
                                 announce=None if quiet else out.print)
        out.print(metrics_table(f"{net.config.name}: {checkpoint}", metrics))
        if out_dir is not None:
            atomic_write_text(out_dir / "eval.json", json.dumps(metrics, indent=2))
            out.print(f"wrote {out_dir / 'eval.json'}")
