"""``dimask export``: a checkpoint to ONNX, every decoder layer's outputs included."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dimaskdino.cli.errors import user_errors
from dimaskdino.cli.options import Checkpoint, OfficialConfig

out = Console(soft_wrap=True)


def dataset_class_names(config, spec: str | None) -> tuple[list[str] | None, str]:
    """The class names of the dataset ``spec`` (default: the config's) when its annotations
    can be read and list as many classes as the model predicts, and a line saying so."""
    from dimaskdino.data.coco import DatasetError
    from dimaskdino.data.loader import open_dataset
    from dimaskdino.data.specs import resolve_dataset

    try:
        source = resolve_dataset(spec or config.data.dataset, "val",
                                 synthetic_spec=config.data.synthetic)
        names = getattr(open_dataset(source), "class_names", None)
    except (DatasetError, OSError, ValueError) as exc:
        return None, f"class names: none ({exc})"
    classes = config.model.predictor.num_classes
    if names is None or len(names) != classes:
        return None, f"class names: none ({source.spec} does not name {classes} classes)"
    return list(names), f"class names: from {source.spec}"


def export(
    checkpoint: Checkpoint,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="The ONNX file to write (default: the checkpoint's name, .onnx).")
    ] = None,
    official_config: OfficialConfig = None,
    height: Annotated[int | None, typer.Option(
        help="Fixed input height (default: a square holding every evaluation image).")
    ] = None,
    width: Annotated[int | None, typer.Option(help="Fixed input width.")] = None,
    layers: Annotated[str, typer.Option(
        help="all: every layer's logits, boxes and masks (layer 0 included; what the layer "
             "probe needs); last: the final layer only (smaller, faster; enough for eval).")
    ] = "all",
    opset: Annotated[int, typer.Option(help="ONNX opset (16 or later: GridSample).")] = 17,
    data: Annotated[str | None, typer.Option(
        help="Dataset spec recorded in the file as the model's dataset, and read for the "
             "class names (default: the checkpoint's).")] = None,
) -> None:
    """Export a checkpoint to ONNX: normalized, padded images (dynamic batch, fixed size)
    to every layer's pred_logits, pred_boxes and pred_masks, through the pure-PyTorch
    deformable attention; post-processing stays in Python (dimask eval / layer-probe run
    the file with onnxruntime)."""
    with user_errors():
        from dimaskdino.checkpoint import load_model
        from dimaskdino.config import ConfigError
        from dimaskdino.engine.export import (
            LAYER_CHOICES,
            check_opset,
            default_size,
            export_onnx,
            require,
        )

        if layers not in LAYER_CHOICES:
            raise ConfigError(f"--layers {layers!r}: choose one of {', '.join(LAYER_CHOICES)}")
        check_opset(opset)
        require("onnx")
        if Path(checkpoint).suffix.lower() == ".onnx":
            raise ConfigError(f"{checkpoint} is already an ONNX file; export reads checkpoints")
        net, config = load_model(checkpoint, official_config)
        if data is not None:
            config = replace(config, data=replace(config.data, dataset=data))
        size = default_size(config)
        size = (height or size[0], width or size[1])
        names, said = dataset_class_names(config, data)
        target = out_file or Path(checkpoint).with_suffix(".onnx")
        metadata = export_onnx(net, config, target, size, layers == "last", opset, names,
                               str(checkpoint))
        out.print(said)
        out.print(f"wrote {target}: {metadata['model']}, layers {metadata['layers']}, input "
                  f"Bx3x{size[0]}x{size[1]} (dynamic batch), opset {opset}")
