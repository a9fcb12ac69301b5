"""``dimask pretrain``: a backbone pretrained by classification on synthetic shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dimaskdino.cli.errors import user_errors

out = Console(soft_wrap=True)


def pretrain(
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Recipe overrides, e.g. iterations=500 backbone.depth=34 data.size=48",
        show_default=False)] = None,
    preset: Annotated[str, typer.Option(help="tiny (the tiny preset's ResNet)")] = "tiny",
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Where to write the backbone (torchvision .pth); default: the cache "
                      "file `model.backbone_weights=pretrained:PRESET` reads (only without "
                      "overrides).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Pretrain a ResNet by classification on synthetic shapes (the tiny scale's ImageNet)
    and write it where `model.backbone_weights` reads it; print the held-out top-1."""
    with user_errors():
        from dimaskdino.config import ConfigError, apply_overrides
        from dimaskdino.engine.pretrain import builtin_path, pretrain, recipe
        from dimaskdino.fileio import check_writable

        config = apply_overrides(recipe(preset), overrides or [])
        if out_file is None:
            if overrides:
                raise ConfigError("a recipe with overrides is not the built-in one: give "
                                  "--out FILE")
            out_file = builtin_path(preset)
        check_writable(out_file)
        result = pretrain(config, out_file, progress=not quiet)
        out.print(f"held-out top-1 {100 * result.top1:.1f}% on {config.data.num_val} images "
                  f"in {result.seconds:.0f} s; backbone: {result.path}")
        out.print(f"train from it: dimask train model.backbone_weights={result.path}")
