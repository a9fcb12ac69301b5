"""``dimask visualize``: pictures of a checkpoint's detections, one panel per decoder layer."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dimaskdino.cli.errors import user_errors
from dimaskdino.cli.options import Checkpoint, OfficialConfig, PrecisionOption

out = Console(soft_wrap=True)

INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1400px;
color: #222; } figure { margin: 1rem 0 2rem; } img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 .2rem; }</style></head>
<body><h1>{{ title }}</h1>
<p>Checkpoint <code>{{ checkpoint }}</code>, images of <code>{{ source }}</code>; layers
{{ layers }} (0 = the decoder's input queries); detections scoring at least {{ threshold }}.
Per detection: the mask tinted in its class colour, the predicted box solid, the tight box
of the predicted mask dashed; ground truth outlined in white. A panel's title gives the mean
IoU of each box with its mask's tight box.</p>
{% for name, data in figures %}<figure id="{{ name }}"><img alt="{{ name }}"
src="data:image/png;base64,{{ data }}"><figcaption><code>{{ name }}.png</code></figcaption>
</figure>{% endfor %}
</body></html>
"""


def _stems(names: list[str]) -> list[str]:
    """File stems made unique (``a``, ``a-2``, ...) for images of the same name."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


def visualize(
    checkpoint: Checkpoint,
    official_config: OfficialConfig = None,
    data: Annotated[str | None, typer.Option(
        help="Dataset spec whose val split is drawn (default: the checkpoint's own).")
    ] = None,
    images: Annotated[list[Path] | None, typer.Option(
        "--images", help="Image files or folders of JPEG / PNG instead of --data "
                         "(repeatable).")] = None,
    count: Annotated[int, typer.Option(help="How many images (the first N).")] = 4,
    layers: Annotated[str, typer.Option(
        help="Decoder layers, one panel each: numbers and 'last', e.g. 0,2,last.")
    ] = "0,last",
    score_threshold: Annotated[float, typer.Option(
        help="Draw the detections scoring at least this.")] = 0.5,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")
                       ] = Path("visualize"),
    precision: PrecisionOption = "auto",
    svg: Annotated[bool, typer.Option("--svg", help="Also write each figure as SVG.")] = False,
    no_gt: Annotated[bool, typer.Option("--no-gt", help="Hide the ground truth.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Draw each image's kept detections at the requested decoder layers (masks, predicted
    boxes, the tight boxes of the masks, ground truth): DIR/<image>.png and DIR/index.html.
    Everything is drawn before anything is written."""
    with user_errors():
        import jinja2

        from dimaskdino.analysis.layer_detections import image_views, resolve_layers
        from dimaskdino.checkpoint import load_model
        from dimaskdino.config import ConfigError
        from dimaskdino.data.images import ImageFolder
        from dimaskdino.data.loader import EvaluationImages, validation_images
        from dimaskdino.engine.evaluator import check_categories
        from dimaskdino.engine.precision import check_precision
        from dimaskdino.fileio import atomic_write, atomic_write_text
        from dimaskdino.progress import progress_bar
        from dimaskdino.reports.drawing import encode, view_figure

        if data is not None and images:
            raise ConfigError("give --data or --images, not both")
        if count < 1:
            raise ConfigError(f"--count must be positive, not {count}")
        check_precision(precision)
        net, config = load_model(checkpoint, official_config)
        chosen = resolve_layers(layers, net.config.predictor.dec_layers)
        if images:
            dataset = EvaluationImages(ImageFolder(images), config.data.test_short,
                                       config.data.test_max_size)
            source = ", ".join(map(str, images))
        else:
            dataset, found = validation_images(config.data, data)
            source = found.spec
        if dataset.dataset.has_annotations:
            check_categories(net, dataset)
        files: dict[str, bytes] = {}
        figures = []
        indices = range(min(count, len(dataset)))
        with progress_bar(disable=quiet) as bar:
            task = bar.add_task("visualize", total=len(indices), status="")
            views = image_views(net, dataset, indices, chosen, score_threshold, precision,
                                ground_truth=not no_gt,
                                announce=None if quiet else out.print)
            for view, stem in zip(views, _stems([Path(dataset.dataset.images[i]["file_name"])
                                                 .stem for i in indices])):
                figure = view_figure(view, chosen)
                files[f"{stem}.png"] = encode(figure)
                if svg:
                    files[f"{stem}.svg"] = encode(figure, "svg")
                figures.append((stem, base64.b64encode(files[f"{stem}.png"]).decode("ascii")))
                bar.advance(task)
        page = jinja2.Environment(autoescape=True).from_string(INDEX).render({
            "title": f"dimask visualize: {checkpoint.name}", "checkpoint": str(checkpoint),
            "source": source, "layers": ", ".join(map(str, chosen)),
            "threshold": score_threshold, "figures": figures})
        for name, content in files.items():
            atomic_write(out_dir / name, content)
        atomic_write_text(out_dir / "index.html", page)
        out.print(f"written: {out_dir / 'index.html'} ({len(figures)} figures)")
